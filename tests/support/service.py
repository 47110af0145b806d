"""The systemd service's test helpers: ``systemd-analyze`` on a unit inside a throwaway root
(``unit_root``, ``verify``, ``exposure``), and the installer's paths and file manifest
(``INSTALLED_UNIT``, ``manifest``).

``systemd-analyze verify`` needs the unit's ExecStart binary and systemd's own units
(sysinit.target and the like); both are looked up under ``--root``, so a root gets a copy of
this machine's system units beside whatever the test installs there. Nothing outside the
root is read or written, and nothing needs systemd running.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "kiosk.service"
INSTALLER = REPO / "scripts" / "install-kiosk.sh"
SYSTEM_DEPS = "scripts/install-system-deps.sh"

# Where the installer puts things (the unit's paths say the same).
VENV = Path("opt/telehealth-agent/venv")
AGENT = VENV / "bin" / "telehealth-agent"
INSTALLED_UNIT = Path("etc/systemd/system/kiosk.service")
SETTINGS = Path("etc/telehealth-agent/agent.toml")
CREDENTIALS = Path("etc/telehealth-agent/credentials")
STATE = Path("var/lib/telehealth-agent")

_SYSTEM_UNITS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


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
    target = root / "usr/lib/systemd/system"
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


def manifest(root: Path, generated: frozenset[Path] = frozenset()) -> dict[str, tuple[str, int, int, str]]:
    """Every path under ``root`` (but systemd's copied units): (kind, mode, owner, sha256); files in
    ``generated`` (random secrets) have no digest, their content differs by design."""
    entries: dict[str, tuple[str, int, int, str]] = {}
    skip = root / "usr/lib/systemd"
    for path in sorted(root.rglob("*")):
        if path == skip or skip in path.parents or "__pycache__" in path.parts:
            continue
        info = path.lstat()
        relative = path.relative_to(root)
        if path.is_symlink():
            kind, digest = "link", str(path.readlink())
        elif path.is_dir():
            kind, digest = "dir", ""
        else:
            kind, digest = "file", "" if relative in generated else sha256(path)
        entries[str(relative)] = (kind, info.st_mode & 0o7777, info.st_uid, digest)
    return entries
