"""The kiosk install's test helpers: the product's wheel alone (``build_product_wheel``, of
another version for an upgrade), ``systemd-analyze`` on a unit inside a throwaway root
(``unit_root``, ``verify``, ``exposure``), scripts/install-kiosk.sh run into a root
(``run_installer``; ``installer_copy`` stands for the next release's) with its paths and a
manifest of what it left there (``manifest``), the agent's version as an installed release
reports it (``agent_version``), and this machine as the installer's target without a change to
it (``OverlaidSystem``: overlays in a mount namespace, a stand-in ``systemctl``; the system's own
Python, ``system_python``, since the installer refuses one kiosk.service could not see).

``systemd-analyze verify`` needs the unit's ExecStart binary and systemd's own units
(sysinit.target and the like); both are looked up under ``--root``, so a root gets a copy of
this machine's system units beside whatever the test installs there. Nothing outside the
root is read or written, and nothing needs systemd running.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from telehealth_client import __version__

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "kiosk.service"
INSTALLER = REPO / "scripts" / "install-kiosk.sh"
SYSTEM_DEPS = "scripts/install-system-deps.sh"
# The product's own files: a wheel built from a copy of them cannot pick up the development stack.
PRODUCT_FILES = ("pyproject.toml", "README.md", "telehealth_client", "devices")

# Where the installer puts things (the unit's paths say the same). VENV links to the release
# that runs, PREVIOUS_VENV to the one before it, each a virtual environment under RELEASES.
OPT = Path("opt/telehealth-agent")
VENV = OPT / "venv"
PREVIOUS_VENV = OPT / "venv.previous"
RELEASES = OPT / "releases"
RELEASE_UNIT = Path("share/telehealth-agent/kiosk.service")  # the unit each release came with
AGENT = VENV / "bin" / "telehealth-agent"
INSTALLED_UNIT = Path("etc/systemd/system/kiosk.service")
SETTINGS = Path("etc/telehealth-agent/agent.toml")
CREDENTIALS = Path("etc/telehealth-agent/credentials")
STATE = Path("var/lib/telehealth-agent")
# Where add_system_units copies systemd's own units: scaffolding, not the installer's.
SYSTEM_UNITS_COPY = Path("usr/lib/systemd/system")

_SYSTEM_UNITS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class Installed:
    """A root scripts/install-kiosk.sh installed into, the wheel it took, what it printed."""

    root: Path
    wheel: Path
    output: str


# The version of the product's next release in the upgrade tests (``build_product_wheel``).
NEXT_VERSION = f"{__version__}+next.release"
# Where the product's version is written: the package metadata and ``telehealth-agent version``.
_VERSION_NAMES = {Path("pyproject.toml"): "version", Path("telehealth_client/__init__.py"): "__version__"}


def build_product_wheel(directory: Path, version: str | None = None) -> Path:
    """The product's wheel, built offline from a copy of its own files under ``directory``;
    ``version``: with that version instead of the checkout's (the next release, for an upgrade)."""
    source = directory / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in PRODUCT_FILES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    if version is not None:
        for relative, name in _VERSION_NAMES.items():
            line = re.compile(rf'^{name} = "[^"]+"$', re.MULTILINE)
            text, count = line.subn(f'{name} = "{version}"', (source / relative).read_text())
            assert count == 1, f"{relative}: not one {name} line to change"
            (source / relative).write_text(text)
    wheels = directory / "wheels"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    # No build isolation: the build backend is this environment's (the test extra pins it), offline.
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, source], check=True)
    [wheel] = wheels.glob("telehealth_client-*.whl")
    return wheel


def installer_environment() -> dict[str, str]:
    """The installer's environment in tests: this Python, and pip offline taking the wheel and
    nothing else (its dependencies are not needed to install, upgrade or verify the unit)."""
    return {
        **os.environ,
        "PYTHON": sys.executable,
        "PIP_NO_INDEX": "1",
        "PIP_NO_DEPS": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }


# Where a system-wide Python is: the one an install on "the running system" builds with (the
# installer refuses an interpreter under /root or /home, such as a pyenv one running the tests).
SYSTEM_PYTHON = Path("/usr/bin/python3")


def system_python() -> str:
    """The system's Python 3.11+ with venv; a failure naming what to install when it is missing."""
    check = "import sys, venv; sys.exit(sys.version_info < (3, 11))"
    if not SYSTEM_PYTHON.exists() or subprocess.run([SYSTEM_PYTHON, "-c", check]).returncode != 0:
        pytest.fail(f"{SYSTEM_PYTHON} is not Python 3.11+ with venv: apt-get install python3 python3-venv")
    return str(SYSTEM_PYTHON)


def run_installer(
    root: Path, *args: str, wheel: Path | None = None, installer: Path = INSTALLER
) -> subprocess.CompletedProcess[str]:
    """``installer`` (scripts/install-kiosk.sh) into ``root``, offline."""
    command = [str(installer), "--root", str(root), *args]
    if wheel is not None:
        command += ["--wheel", str(wheel)]
    return subprocess.run(command, capture_output=True, text=True, env=installer_environment(), timeout=300)


# The installer's own files: what it installs besides the wheel comes from beside it.
INSTALLER_FILES = ("scripts/install-kiosk.sh", "kiosk.service", "packaging", "README.md")


def installer_copy(directory: Path, unit_comment: str) -> Path:
    """The installer with its files copied under ``directory``, its unit marked by a comment line:
    the next release's installer, whose unit a rollback must replace with the previous one."""
    for name in INSTALLER_FILES:
        path, copy = REPO / name, directory / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir():
            shutil.copytree(path, copy)
        else:
            shutil.copy2(path, copy)
    unit = directory / "kiosk.service"
    unit.write_text(f"# {unit_comment}\n{unit.read_text()}")
    return directory / "scripts" / "install-kiosk.sh"


def agent_version(root: Path, venv: Path = VENV) -> str:
    """What ``telehealth-agent version`` of the release ``venv`` links to under ``root`` prints.

    The installs in tests carry no dependencies (``PIP_NO_DEPS``): they come from this
    environment's site-packages as a path entry, whose ``.pth`` files (the checkout's editable
    install) are not read, so the release's own copy of the agent is the one that runs."""
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    result = subprocess.run(
        [str(root / venv / "bin" / "telehealth-agent"), "version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# What a target system has before the installer: directories and an (empty) user database, to
# which the installer adds its user (``useradd --prefix``). Its uninstall leaves these.
SKELETON_DIRECTORIES = (Path("etc/systemd/system"), Path("opt"), Path("var/lib"))
USER_DATABASE = ("passwd", "group", "shadow", "gshadow")


def system_skeleton(root: Path) -> None:
    """``root`` made to look like a bare target system (``SKELETON_DIRECTORIES``, ``USER_DATABASE``)."""
    for directory in SKELETON_DIRECTORIES:
        (root / directory).mkdir(parents=True, exist_ok=True)
    for name in USER_DATABASE:
        (root / "etc" / name).touch(mode=0o600 if "shadow" in name else 0o644)


def user_database(root: Path) -> list[Path]:
    """The user database's files under ``root``, with the backups (``passwd-``) useradd makes."""
    return [path.relative_to(root) for name in USER_DATABASE for path in (root / "etc").glob(f"{name}*")]


def systemd_analyze() -> str:
    """The ``systemd-analyze`` binary; a failure naming how to install it when it is missing (the
    unit's checks are part of the product's tests, never skipped)."""
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail(f"systemd-analyze is not installed: run {SYSTEM_DEPS} (it installs systemd)")
    return found


def add_system_units(root: Path) -> None:
    """This machine's systemd units under ``root``, so that verify finds the targets it pulls in."""
    source = next((path for path in _SYSTEM_UNITS if (path / "sysinit.target").exists()), None)
    if source is None:
        pytest.fail(f"systemd's own units (sysinit.target) are not installed: run {SYSTEM_DEPS}")
    target = root / SYSTEM_UNITS_COPY
    if not target.exists():
        shutil.copytree(source, target, symlinks=True)


def unit_root(root: Path, unit: Path = UNIT) -> Path:
    """A root holding ``unit`` where the installer puts it and a stand-in for its ExecStart binary."""
    add_system_units(root)
    installed = root / INSTALLED_UNIT
    installed.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(unit, installed)
    binary = root / AGENT
    binary.parent.mkdir(parents=True, exist_ok=True)
    binary.write_text("#!/bin/sh\nexit 0\n")
    binary.chmod(0o755)
    return root


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [systemd_analyze(), *args, f"--root={root}", INSTALLED_UNIT.name],
        capture_output=True,
        text=True,
        timeout=60,
    )


def verify(root: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify`` of the unit installed under ``root``."""
    return analyze(root, "verify")


def exposure(root: Path) -> tuple[float, str]:
    """The overall exposure score of ``systemd-analyze security --offline=yes`` and its report."""
    result = analyze(root, "security", "--offline=yes", "--no-pager")
    found = _EXPOSURE.search(result.stdout)
    assert found is not None, f"no exposure level in:\n{result.stdout}{result.stderr}"
    return float(found.group(1)), result.stdout


def unit_settings(unit: Path = UNIT) -> list[tuple[str, str]]:
    """The unit's ``Key=value`` lines in order (comments and sections left out)."""
    pairs = []
    for line in unit.read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            pairs.append((key, value))
    return pairs


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest(root: Path, skip: Sequence[Path] = ()) -> dict[str, tuple[str, int, int, str]]:
    """Every path under ``root`` but ``skip`` (relative paths, with what is under them) and byte
    code: (kind, mode, owner, sha256 or a link's target)."""
    entries: dict[str, tuple[str, int, int, str]] = {}
    skipped = [root / path for path in skip]
    for path in sorted(root.rglob("*")):
        if any(path == top or top in path.parents for top in skipped) or "__pycache__" in path.parts:
            continue
        info = path.lstat()
        relative = path.relative_to(root)
        if path.is_symlink():
            kind, digest = "link", str(path.readlink())
        elif path.is_dir():
            kind, digest = "dir", ""
        else:
            kind, digest = "file", sha256(path)
        entries[str(relative)] = (kind, info.st_mode & 0o7777, info.st_uid, digest)
    return entries


# A stand-in for systemctl where no systemd runs: it records each call (and where the unit's
# venv link pointed then) and answers ``is-active`` with the state the test set; every other
# call succeeds.
_SYSTEMCTL = """#!/bin/sh
echo "$*" >>"$SYSTEMCTL_LOG"
echo "$(readlink /opt/telehealth-agent/venv)" >>"$SYSTEMCTL_LOG.venv"
if [ "$1" = is-active ]; then
    state=$(cat "$SYSTEMCTL_STATE")
    echo "$state"
    [ "$state" = active ] && exit 0
    exit 3
fi
exit 0
"""
# In a private mount namespace: /etc, /opt, /var/lib and /run as overlays whose changes go to the
# test's directories, and /run/systemd/system, where the installer looks for a running systemd.
_OVERLAID = """set -e
for top in etc opt var/lib run; do
    upper=$OVERLAY/upper/$top work=$OVERLAY/work/$top
    mkdir -p "$upper" "$work"
    mount -t overlay overlay -o "lowerdir=/$top,upperdir=$upper,workdir=$work" "/$top"
done
mkdir -p /run/systemd/system
exec "$@"
"""


class OverlaidSystem:
    """This machine as the installer's target without changing it: each run is in a mount
    namespace of its own over the same overlay directories, so one run sees what the last left;
    ``systemctl`` is the stand-in above (``state`` is what ``is-active`` answers, ``calls`` what
    it was asked, in order)."""

    def __init__(self, directory: Path) -> None:
        self.overlay = directory / "overlay"
        self.overlay.mkdir(parents=True)
        bin_dir = directory / "bin"
        bin_dir.mkdir()
        systemctl = bin_dir / "systemctl"
        systemctl.write_text(_SYSTEMCTL)
        systemctl.chmod(0o755)
        self.log = directory / "systemctl.log"
        self.log.touch()
        self._state = directory / "systemctl.state"
        self.state = "inactive"
        self._path = f"{bin_dir}:{os.environ['PATH']}"

    @property
    def state(self) -> str:
        return self._state.read_text()

    @state.setter
    def state(self, value: str) -> None:
        self._state.write_text(value)

    @property
    def calls(self) -> list[str]:
        return self.log.read_text().splitlines()

    @property
    def venv_links(self) -> list[str]:
        """Where /opt/telehealth-agent/venv pointed at each of ``calls`` ("" when it did not exist)."""
        path = self.log.with_name(self.log.name + ".venv")
        return path.read_text().splitlines() if path.exists() else []

    def changed(self, path: str) -> Path:
        """Where the overlay keeps what a run wrote to ``path`` (absolute) of this machine."""
        return self.overlay / "upper" / path.lstrip("/")

    def run(self, *argv: str, stdin: str = "", python: str | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` on "the running system", with the installer's environment (its ``PYTHON``:
        ``python``, else the system's) and ``stdin``."""
        env = {
            **installer_environment(),
            "PYTHON": python or system_python(),
            "PATH": self._path,
            "OVERLAY": str(self.overlay),
            "SYSTEMCTL_LOG": str(self.log),
            "SYSTEMCTL_STATE": str(self._state),
        }
        namespace = ["unshare", "--mount", "--propagation", "private", "bash", "-c", _OVERLAID, "overlaid"]
        result = subprocess.run(
            [*namespace, *argv], input=stdin, capture_output=True, text=True, env=env, timeout=300
        )
        if result.stderr.startswith(("mount:", "unshare:")):
            pytest.fail(
                "cannot make an overlaid system here (it needs root, mount namespaces and overlayfs):\n"
                + result.stderr
            )
        return result

    def run_installer(self, *args: str, wheel: Path | None = None) -> subprocess.CompletedProcess[str]:
        """scripts/install-kiosk.sh on "the running system" (no --root unless ``args`` say so)."""
        return self.run(str(INSTALLER), *args, *([] if wheel is None else ["--wheel", str(wheel)]))
