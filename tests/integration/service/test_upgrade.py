"""scripts/install-kiosk.sh upgrading in place, in a throwaway root: version A installed and filled
in, then the next release's installer with version B. The settings, credentials and state
directory stay byte for byte with their modes; B runs and A stays as the previous release; the
same version again changes nothing; ``--rollback`` puts A and its unit back (and, again, B); an
earlier installer's virtual environment directory is taken over; a third version keeps only
itself and B; a wheel that cannot be installed leaves A running as it was."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from telehealth_client import __version__
from tests.support.service import (
    CREDENTIALS,
    INSTALLED_UNIT,
    NEXT_VERSION,
    PREVIOUS_VENV,
    RELEASE_UNIT,
    RELEASES,
    SETTINGS,
    STATE,
    UNIT,
    VENV,
    Installed,
    add_system_units,
    agent_version,
    build_product_wheel,
    installer_copy,
    manifest,
    run_installer,
    system_skeleton,
    verify,
)

pytestmark = pytest.mark.integration

A = __version__
B = NEXT_VERSION
A_AGENT = f"telehealth-agent {A}"
B_AGENT = f"telehealth-agent {B}"
B_UNIT_MARK = "the next release's unit"
# What the operator and the agent made of version A's install: none of it is the installer's.
KEPT = (Path("etc/telehealth-agent"), STATE)


@pytest.fixture(scope="module")
def next_installer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return installer_copy(tmp_path_factory.mktemp("next-release"), B_UNIT_MARK)


def kept_files(root: Path) -> dict[str, dict[str, tuple[str, int, int, str]]]:
    """The settings, credentials and state directory: each path's kind, mode, owner and content."""
    return {str(top): manifest(root / top) for top in KEPT}


def fill_in_and_run(root: Path) -> None:
    """What an operator and a running agent leave: settings and a key filled in, a state directory
    owned by the service's user with a store and the consultation's state in it."""
    settings = root / SETTINGS
    settings.write_text(settings.read_text().replace('"kiosk-unconfigured"', '"kiosk-lobby-2"'))
    (root / CREDENTIALS / "cipher_key").write_text("a-cipher-key-of-the-organization\n")
    uid = next(
        int(line.split(":")[2])
        for line in (root / "etc/passwd").read_text().splitlines()
        if line.startswith("telehealth:")
    )
    for directory in (root / STATE, root / STATE / "audit", root / STATE / "consultation"):
        directory.mkdir(mode=0o700, parents=True)
        os.chown(directory, uid, uid)
    files = {"audit/audit.sqlite3": b"audit store", "outbox.sqlite3": b"outbox", "consultation/x.json": b"{}"}
    for name, content in files.items():
        path = root / STATE / name
        path.write_bytes(content)
        path.chmod(0o600)
        os.chown(path, uid, uid)


@dataclass
class Step:
    """One installer run of the upgrade's history and what it left."""

    code: int
    output: str
    kept: dict[str, dict[str, tuple[str, int, int, str]]]
    running: str = ""  # ``telehealth-agent version`` of venv/
    previous: str = ""  # of venv.previous/
    releases: list[str] = field(default_factory=list)
    unit: bytes = b""


@dataclass
class History:
    root: Path
    installed: Step  # A, filled in
    upgraded: Step  # B by the next release's installer
    again: Step  # B once more
    again_unchanged: bool  # the whole root as the upgrade left it
    rolled_back: Step
    rolled_forward: Step  # --rollback a second time


def step(root: Path, result: subprocess.CompletedProcess[str] | None = None) -> Step:
    code, output = (0, "") if result is None else (result.returncode, result.stdout + result.stderr)
    recorded = Step(code, output, kept_files(root))
    recorded.running = agent_version(root)
    if (root / PREVIOUS_VENV).exists():
        recorded.previous = agent_version(root, PREVIOUS_VENV)
    recorded.releases = sorted(path.name for path in (root / RELEASES).iterdir())
    recorded.unit = (root / INSTALLED_UNIT).read_bytes()
    return recorded


@pytest.fixture(scope="module")
def history(
    tmp_path_factory: pytest.TempPathFactory, product_wheel: Path, next_wheel: Path, next_installer: Path
) -> History:
    """The whole history in one root, each step recorded (the tests only read it: they may run
    apart, on different workers)."""
    root = tmp_path_factory.mktemp("upgraded-root")
    system_skeleton(root)
    first = run_installer(root, wheel=product_wheel)
    assert first.returncode == 0, first.stderr
    fill_in_and_run(root)
    installed = step(root)
    upgraded = step(root, run_installer(root, wheel=next_wheel, installer=next_installer))
    before = manifest(root)
    again = step(root, run_installer(root, wheel=next_wheel, installer=next_installer))
    unchanged = manifest(root) == before
    rolled_back = step(root, run_installer(root, "--rollback"))
    rolled_forward = step(root, run_installer(root, "--rollback"))
    return History(root, installed, upgraded, again, unchanged, rolled_back, rolled_forward)


def test_version_a_runs_before_the_upgrade(history: History) -> None:
    assert (history.installed.running, history.installed.previous) == (A_AGENT, "")
    assert history.installed.releases == [A]


def test_the_upgrade_keeps_settings_credentials_and_state_byte_for_byte(history: History) -> None:
    assert history.upgraded.code == 0, history.upgraded.output
    assert history.upgraded.kept == history.installed.kept
    # The fixture's files are there, with their owner and modes (not an empty comparison).
    state = history.upgraded.kept[str(STATE)]
    assert state["audit/audit.sqlite3"][1] == 0o600 and state["audit/audit.sqlite3"][2] != 0
    assert history.upgraded.kept["etc/telehealth-agent"]["credentials/cipher_key"][1] == 0o600


def test_the_upgrade_runs_b_and_keeps_a_as_the_previous_release(history: History) -> None:
    assert (history.upgraded.running, history.upgraded.previous) == (B_AGENT, A_AGENT)
    assert history.upgraded.releases == sorted([A, B])
    assert f"upgraded: the agent {A} -> {B}" in history.upgraded.output
    assert "the agent migrates its stores at its next start" in history.upgraded.output
    # The next release's unit, installed and kept with its release.
    assert history.upgraded.unit.startswith(f"# {B_UNIT_MARK}\n".encode())
    assert (history.root / RELEASES / B / RELEASE_UNIT).read_bytes() == history.upgraded.unit


def test_the_same_version_again_changes_nothing(history: History) -> None:
    assert history.again.code == 0, history.again.output
    assert history.again_unchanged
    assert f"the agent {B} is installed already" in history.again.output
    assert (history.again.running, history.again.previous) == (B_AGENT, A_AGENT)


def test_rollback_puts_a_and_its_unit_back_and_keeps_b(history: History) -> None:
    rolled_back = history.rolled_back
    assert rolled_back.code == 0, rolled_back.output
    assert (rolled_back.running, rolled_back.previous) == (A_AGENT, B_AGENT)
    assert rolled_back.unit == UNIT.read_bytes()
    assert rolled_back.kept == history.installed.kept
    assert f"rolled back: the agent {B} -> {A}" in rolled_back.output


def test_a_second_rollback_returns_to_b(history: History) -> None:
    forward = history.rolled_forward
    assert forward.code == 0, forward.output
    assert (forward.running, forward.previous) == (B_AGENT, A_AGENT)
    assert forward.unit.startswith(f"# {B_UNIT_MARK}\n".encode())


def test_the_upgraded_unit_verifies_through_the_release_link(history: History, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(history.root, root, symlinks=True)
    add_system_units(root)
    assert (root / VENV).is_symlink()
    result = verify(root)
    assert (result.returncode, result.stderr) == (0, "")


def test_rollback_with_no_previous_release_is_refused_and_changes_nothing(
    installed: Installed, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed.root, root, symlinks=True)
    before = manifest(root)
    result = run_installer(root, "--rollback")
    assert result.returncode == 1
    assert "no previous release to roll back to" in result.stderr
    assert manifest(root) == before


def test_a_venv_directory_of_an_earlier_installer_is_taken_over(
    product_wheel: Path, next_wheel: Path, next_installer: Path, tmp_path: Path
) -> None:
    # The earlier installer's layout: the virtual environment itself at venv/, no releases.
    root = tmp_path / "root"
    system_skeleton(root)
    first = run_installer(root, wheel=product_wheel)
    assert first.returncode == 0, first.stderr
    shutil.rmtree(root / RELEASES)
    (root / VENV).unlink()
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root / VENV], check=True)
    # Only the new environment is looked at: not this checkout's egg-info (the current directory) nor
    # a PYTHONPATH, where pip would find the agent "already installed".
    alone = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    subprocess.run(
        [*pip, "--python", root / VENV / "bin" / "python", "install", "--no-deps", product_wheel],
        check=True,
        env=alone,
        cwd=root,
    )
    assert agent_version(root) == A_AGENT

    upgraded = run_installer(root, wheel=next_wheel, installer=next_installer)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"moved the agent {A} from {root / VENV} to {root / RELEASES / A}" in upgraded.stdout
    assert os.readlink(root / PREVIOUS_VENV) == f"releases/{A}"
    # Its scripts now name the interpreter where it is, so it runs as the previous release too.
    assert (agent_version(root), agent_version(root, PREVIOUS_VENV)) == (B_AGENT, A_AGENT)

    back = run_installer(root, "--rollback")
    assert back.returncode == 0, back.stderr
    assert agent_version(root) == A_AGENT
    assert "has no copy of its unit (an earlier installer's)" in back.stdout
    assert (root / INSTALLED_UNIT).read_text().startswith(f"# {B_UNIT_MARK}\n")  # kept, said so


def unusable_wheel(directory: Path, name: str, version: str) -> Path:
    """A file named as a wheel of the agent, holding only metadata naming ``name`` ``version``."""
    wheel = directory / "telehealth_client-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        archive.writestr("telehealth_client-9.9.9.dist-info/METADATA", metadata)
    return wheel


@pytest.mark.parametrize(
    ("name", "version", "reason"),
    [
        # pip refuses it (no WHEEL file in it): the half-built release is removed again.
        ("telehealth-client", "9.9.9", "pip could not install"),
        ("another-agent", "9.9.9", "not the telehealth-client distribution (name: another-agent)"),
        ("telehealth-client", "9.9/../9", "no usable version (found: 9.9/../9)"),
    ],
)
def test_a_wheel_that_cannot_be_installed_leaves_the_running_release(
    installed: Installed, tmp_path: Path, name: str, version: str, reason: str
) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed.root, root, symlinks=True)
    before = manifest(root)
    result = run_installer(root, wheel=unusable_wheel(tmp_path, name, version))
    assert result.returncode == 1, result.stdout
    assert reason in result.stderr
    assert manifest(root) == before
    assert os.readlink(root / VENV) == f"releases/{A}"


def test_a_third_version_keeps_only_itself_and_the_one_it_replaces(history: History, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(history.root, root, symlinks=True)  # B runs (rolled forward), A is the previous
    (tmp_path / "third").mkdir()
    third = build_product_wheel(tmp_path / "third", version=f"{__version__}+third.release")
    result = run_installer(root, wheel=third)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (root / RELEASES).iterdir()) == sorted(
        [B, f"{__version__}+third.release"]
    )
    assert (os.readlink(root / VENV), os.readlink(root / PREVIOUS_VENV)) == (
        f"releases/{__version__}+third.release",
        f"releases/{B}",
    )
