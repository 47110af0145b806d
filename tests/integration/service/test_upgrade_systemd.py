"""What scripts/install-kiosk.sh asks of systemd on the running system (no ``--root``): a first
install reloads it and starts nothing; an upgrade restarts the service only when it was running;
a rollback restarts it when it was running or had failed (a new version's crash loop), never
when it was stopped; the uninstall disables it; with ``--root`` systemctl is never run.

This machine is the target without changing it (``OverlaidSystem``: its /etc, /opt, /var/lib and
/run as overlays in a mount namespace, /run/systemd/system present). No systemd runs here, so
``systemctl`` is the one stand-in: it records each call and answers ``is-active`` with the state
each step sets. The installs themselves are real: a virtual environment per version, the user
added to the overlaid /etc/passwd."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from telehealth_client import __version__
from tests.support.service import NEXT_VERSION, OverlaidSystem, system_skeleton

pytestmark = pytest.mark.integration

UNIT = "kiosk.service"
INSPECT = f"is-active {UNIT}"
RESTART = [f"reset-failed {UNIT}", f"restart {UNIT}"]
OPT = "/opt/telehealth-agent"


@dataclass(frozen=True)
class Run:
    code: int
    output: str
    calls: list[str]  # systemctl's, during this run only
    links: list[str]  # where the unit's venv link pointed at each call


@dataclass(frozen=True)
class Runs:
    system: OverlaidSystem
    install: Run  # version A, the service not running (a first install)
    upgrade_running: Run  # to B, the service active
    rollback_stopped: Run  # back to A, the service stopped by the operator
    rollback_failed: Run  # to B again, the service failed
    upgrade_stopped: Run  # to A, rebuilt, the service inactive
    uninstall: Run
    overlay_after_install: list[str]  # what the first install wrote to "/", as the overlay kept it


def run(system: OverlaidSystem, state: str, *args: str, wheel: Path | None = None) -> Run:
    system.state = state
    before = len(system.calls)
    result = system.run_installer(*args, wheel=wheel)
    assert result.returncode == 0, result.stdout + result.stderr
    return Run(result.returncode, result.stdout, system.calls[before:], system.venv_links[before:])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, product_wheel: Path, next_wheel: Path) -> Runs:
    """One history on one overlaid system, each run recorded (tests only read it)."""
    system = OverlaidSystem(tmp_path_factory.mktemp("overlaid"))
    install = run(system, "inactive", wheel=product_wheel)
    written = [
        str(path.relative_to(system.changed("/")))
        for top in ("etc", "opt")
        for path in system.changed(f"/{top}").iterdir()
    ]
    return Runs(
        system,
        install=install,
        upgrade_running=run(system, "active", wheel=next_wheel),
        rollback_stopped=run(system, "inactive", "--rollback"),
        rollback_failed=run(system, "failed", "--rollback"),
        upgrade_stopped=run(system, "inactive", wheel=product_wheel),
        uninstall=run(system, "active", "--uninstall"),
        overlay_after_install=sorted(written),
    )


def test_a_first_install_reloads_systemd_and_starts_nothing(runs: Runs) -> None:
    assert runs.install.calls == ["daemon-reload"]
    assert "then start it: systemctl enable --now kiosk.service" in runs.install.output


def test_the_install_went_to_this_machine_only_through_the_overlay(runs: Runs) -> None:
    # The runs were real installs on "/" (the overlay kept what they wrote), and this machine has none.
    assert {"etc/systemd", "etc/telehealth-agent", "etc/passwd", "opt/telehealth-agent"} <= set(
        runs.overlay_after_install
    )
    assert not Path(OPT).exists() and not Path("/etc/systemd/system", UNIT).exists()
    assert not Path("/etc/telehealth-agent").exists()


def test_an_upgrade_restarts_a_running_service(runs: Runs) -> None:
    assert runs.upgrade_running.calls == ["daemon-reload", INSPECT, *RESTART]
    assert f"{UNIT}: restarted (it was active)" in runs.upgrade_running.output
    # Reloaded and restarted once the link names the new release.
    assert set(runs.upgrade_running.links) == {f"releases/{NEXT_VERSION}"}


def test_an_upgrade_leaves_a_stopped_service_stopped(runs: Runs) -> None:
    assert runs.upgrade_stopped.calls == ["daemon-reload", INSPECT]
    assert f"{UNIT}: inactive, left so" in runs.upgrade_stopped.output
    assert set(runs.upgrade_stopped.links) == {f"releases/{__version__}"}  # switched all the same


def test_a_rollback_restarts_a_failed_service_but_not_a_stopped_one(runs: Runs) -> None:
    assert runs.rollback_stopped.calls == ["daemon-reload", INSPECT]
    assert runs.rollback_failed.calls == ["daemon-reload", INSPECT, *RESTART]
    assert f"{UNIT}: restarted (it was failed)" in runs.rollback_failed.output
    assert set(runs.rollback_failed.links) == {f"releases/{NEXT_VERSION}"}  # back on B


def test_the_uninstall_stops_and_disables_the_service(runs: Runs) -> None:
    assert runs.uninstall.calls == [f"disable --now {UNIT}", "daemon-reload"]


def test_with_root_systemctl_is_never_run(product_wheel: Path, next_wheel: Path, tmp_path: Path) -> None:
    # On the overlaid system systemd looks as if it ran, so only --root keeps systemctl out.
    system = OverlaidSystem(tmp_path / "system")
    root = tmp_path / "root"
    system_skeleton(root)
    system.state = "active"
    for args in (
        ["--wheel", str(product_wheel)],
        ["--wheel", str(next_wheel)],
        ["--rollback"],
        ["--uninstall"],
    ):
        result = system.run_installer("--root", str(root), *args)
        assert result.returncode == 0, result.stderr
        assert "not restarted here" in result.stdout or args[0] != "--rollback"
    assert system.calls == []
