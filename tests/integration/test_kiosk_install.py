"""A kiosk install: the product's wheel alone in a new virtual environment, as the installer puts
it on a kiosk. It carries no development stack (no ``telehealth_devstack``, no ``devstack/``, no
demo), and ``version``, ``check-devices`` and ``run`` work from it.

The wheel is built from a copy of the product's own files only (pyproject.toml, README.md,
``telehealth_client/``, ``devices/``): the development stack is not even there to be picked up.
Its third-party dependencies come from this test environment's site-packages on ``PYTHONPATH``
(a path entry, so the ``.pth`` files of the editable installs there are not read: neither the
product's checkout nor the stack is importable through it). Installing them from PyPI again would
test PyPI, not the product.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from devices.synthetic import write_video
from telehealth_client import __version__
from telehealth_devstack.stack import DevStack
from tests.support.cli import Process, clean_environment, notified, notify_socket
from tests.support.service import REPO, build_product_wheel

pytestmark = pytest.mark.integration


class KioskInstall:
    def __init__(self, venv: Path, wheel: Path) -> None:
        self.venv = venv
        self.wheel = wheel
        self.site_packages = Path(
            subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-c",
                    "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )

    def environment(self, extra: dict[str, str]) -> dict[str, str]:
        env = clean_environment(extra)
        env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]  # the dependencies, nothing of ours
        return env

    async def start(self, *args: str, env: dict[str, str]) -> Process:
        # Not in the checkout: nothing of it on the path by accident.
        return await Process.spawn(self.venv / "bin" / "telehealth-agent", *args, env=env, cwd=self.venv)


@pytest.fixture(scope="module")
def kiosk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KioskInstall]:
    root = tmp_path_factory.mktemp("kiosk-install")
    wheel = build_product_wheel(root)
    venv = root / "venv"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    subprocess.run([*pip, "--python", venv / "bin" / "python", "install", "--no-deps", wheel], check=True)
    yield KioskInstall(venv, wheel)


def test_the_kiosk_wheel_and_install_hold_no_development_stack(kiosk: KioskInstall) -> None:
    with zipfile.ZipFile(kiosk.wheel) as wheel:
        names = wheel.namelist()
        top_levels = {name.split("/")[0] for name in names}
    assert {"telehealth_client", "devices"} <= top_levels
    # The technician page the local API serves travels with the product.
    assert {
        f"telehealth_client/api/static/{page}" for page in ("index.html", "technician.css", "technician.js")
    } <= set(names)
    assert not [name for name in top_levels if "devstack" in name or name == "demo"]
    installed = sorted(p.name for p in kiosk.site_packages.iterdir())
    assert "telehealth_client" in installed
    assert not [name for name in installed if "devstack" in name]
    assert not list(kiosk.site_packages.rglob("demo"))
    result = subprocess.run(
        [str(kiosk.venv / "bin" / "python"), "-c", "import telehealth_devstack"],
        capture_output=True,
        text=True,
        env=kiosk.environment({}),
        cwd=kiosk.venv,
    )
    assert result.returncode != 0 and "No module named 'telehealth_devstack'" in result.stderr


async def test_version_check_devices_and_demo_from_the_kiosk_install(
    kiosk: KioskInstall, tmp_path: Path
) -> None:
    version = await kiosk.start("version", env=kiosk.environment({}))
    code, out, err = await version.finish()
    assert (code, out.strip()) == (0, f"telehealth-agent {__version__}"), err

    video = write_video(tmp_path / "camera.mkv", "normal", frames=40)
    check = await kiosk.start(
        "check-devices", "--camera", str(video), "--skip", "microphone", "--skip", "speaker", "--json",
        env=kiosk.environment({}),
    )  # fmt: skip
    code, out, err = await check.finish(within=60)
    assert code == 0, err
    assert json.loads(out)["camera"]["status"] == "ok"

    demo = await kiosk.start("demo", env=kiosk.environment({}))
    code, _, err = await demo.finish()
    assert code == 2
    assert "the development stack is not installed" in err and "Traceback" not in err


@pytest.fixture
async def dev_stack() -> AsyncIterator[DevStack]:
    async with DevStack(kiosks=("kiosk-installed",)) as stack:
        yield stack


async def test_run_from_the_kiosk_install_is_ready_and_stops_cleanly(
    kiosk: KioskInstall, dev_stack: DevStack, tmp_path: Path
) -> None:
    notify_path = tmp_path / "notify.sock"
    with notify_socket(notify_path) as notify:
        env = kiosk.environment(
            {**dev_stack.agent_environment("kiosk-installed"), "NOTIFY_SOCKET": str(notify_path)}
        )
        agent = await kiosk.start("run", env=env)
        ready = await notified(notify, b"READY=1", within=60.0)
        agent.send_signal(signal.SIGTERM)
        code, out, err = await agent.finish()
    assert code == 0, err
    assert b"STATUS=idle" in ready
    assert "agent started role=patient user=kiosk-installed status=idle" in out
    # It ran the installed copy, not the checkout's.
    assert str(REPO) not in out + err
