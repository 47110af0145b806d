"""scripts/install-kiosk.sh into a throwaway root: the agent alone in its virtual environment,
the unit (which verifies there), root-only credential files with placeholders the agent refuses
and a generated API token, a printout naming what is left to fill in; a second run changes
nothing (a filled-in file included); --uninstall keeps only the state directory; a user other
than root is refused."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from telehealth_client.config import ConfigError, load_settings
from tests.support.service import (
    AGENT,
    CREDENTIALS,
    INSTALLED_UNIT,
    INSTALLER,
    SETTINGS,
    SKELETON_DIRECTORIES,
    STATE,
    VENV,
    Installed,
    add_system_units,
    manifest,
    run_installer,
    user_database,
    verify,
)

pytestmark = pytest.mark.integration

PLACEHOLDER_SECRETS = ("publish_key", "subscribe_key", "cipher_key", "device_credential")
PLACEHOLDER_SETTINGS = ("user_id", "organization_id", "department_id", "clinic_url")


def copy_of(installed: Installed, tmp_path: Path) -> Path:
    """The installed root copied, for a test that changes it."""
    root = tmp_path / "root"
    shutil.copytree(installed.root, root, symlinks=True)
    return root


def test_files_modes_and_owners(installed: Installed) -> None:
    root = installed.root
    credentials = root / CREDENTIALS
    assert (credentials.stat().st_mode & 0o777, credentials.stat().st_uid) == (0o700, 0)
    names = sorted(path.name for path in credentials.iterdir())
    assert names == sorted([*PLACEHOLDER_SECRETS, "api_token"])
    for path in credentials.iterdir():
        assert (path.stat().st_mode & 0o777, path.stat().st_uid, path.stat().st_gid) == (0o600, 0, 0), path
    assert re.fullmatch(r"[0-9a-f]{64}", (credentials / "api_token").read_text())
    assert (root / SETTINGS).stat().st_mode & 0o777 == 0o644
    assert (root / INSTALLED_UNIT).read_bytes() == (INSTALLER.parents[1] / "kiosk.service").read_bytes()
    assert "telehealth:x:" in (root / "etc/passwd").read_text()


def test_the_printout_names_each_placeholder_and_the_start_command(installed: Installed) -> None:
    out = installed.output
    for name in PLACEHOLDER_SECRETS:
        assert f"{installed.root / CREDENTIALS / name}: " in out
    for key in PLACEHOLDER_SETTINGS:
        assert f"{installed.root / SETTINGS}: {key}\n" in out
    assert "api_token: generated in" in out
    assert (installed.root / CREDENTIALS / "api_token").read_text() not in out
    assert "systemctl enable --now kiosk.service" in out


def test_the_agent_refuses_to_start_on_the_placeholders(installed: Installed) -> None:
    environ = {"CREDENTIALS_DIRECTORY": str(installed.root / CREDENTIALS)}
    with pytest.raises(ConfigError) as refused:
        load_settings(installed.root / SETTINGS, environ=environ)
    problems = "\n".join(refused.value.problems)
    for name in PLACEHOLDER_SECRETS:
        assert f"{name} (credential " in problems
    assert "api_token" not in problems  # the generated token is a usable one
    assert len(refused.value.problems) == len(PLACEHOLDER_SECRETS)  # the settings file itself loads


def test_the_installed_unit_verifies(installed: Installed, tmp_path: Path) -> None:
    root = copy_of(installed, tmp_path)
    add_system_units(root)
    assert (root / AGENT).is_file()
    result = verify(root)
    assert (result.returncode, result.stderr) == (0, "")


def test_the_venv_holds_the_agent_and_no_development_stack(installed: Installed) -> None:
    [site_packages] = (installed.root / VENV / "lib").glob("python3*/site-packages")
    installed_names = {path.name.split("-")[0] for path in site_packages.iterdir()}
    assert {"telehealth_client", "devices"} <= installed_names
    assert not [name for name in installed_names if "devstack" in name or name == "demo"]


def test_a_second_run_changes_nothing_and_keeps_what_was_filled_in(
    installed: Installed, tmp_path: Path
) -> None:
    root = copy_of(installed, tmp_path)
    (root / CREDENTIALS / "publish_key").write_text("pub-c-filled-in-by-the-operator\n")
    settings = root / SETTINGS
    settings.write_text(settings.read_text().replace('"kiosk-unconfigured"', '"kiosk-lobby-2"'))
    before = manifest(root)
    second = run_installer(root, wheel=installed.wheel)
    assert second.returncode == 0, second.stderr
    assert manifest(root) == before
    assert f"{root / CREDENTIALS / 'publish_key'}:" not in second.stdout
    assert f"{root / SETTINGS}: user_id\n" not in second.stdout
    assert f"{root / CREDENTIALS / 'cipher_key'}:" in second.stdout


def test_uninstall_keeps_only_the_state_directory_unless_purged(installed: Installed, tmp_path: Path) -> None:
    root = copy_of(installed, tmp_path)
    state = root / STATE
    state.mkdir(parents=True)
    (state / "audit.sqlite").write_bytes(b"kept")
    result = run_installer(root, "--uninstall")
    assert result.returncode == 0, result.stderr
    left = set(manifest(root, skip=user_database(root)))
    skeleton = {str(path) for directory in SKELETON_DIRECTORIES for path in (directory, *directory.parents)}
    assert left == skeleton - {"."} | {str(STATE), str(STATE / "audit.sqlite")}
    assert "telehealth:" not in (root / "etc/passwd").read_text()
    purged = run_installer(root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not state.exists()


def test_a_root_without_a_user_database_gets_no_user_only_its_command(
    installed: Installed, tmp_path: Path
) -> None:
    root = copy_of(installed, tmp_path)
    for path in user_database(root):
        (root / path).unlink()
    result = run_installer(root, wheel=installed.wheel)
    assert result.returncode == 0, result.stderr
    assert "on the target it runs: useradd --system" in result.stdout
    assert not (root / "etc/passwd").exists()


def test_a_user_other_than_root_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    result = subprocess.run(
        [*nobody, str(INSTALLER), "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "must run as root" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--purge"], "--purge goes with --uninstall"),
        (["--frobnicate"], "unknown argument: --frobnicate"),
        (["--wheel", "/nonexistent.whl"], "--wheel /nonexistent.whl: no such file"),
        (["--rollback", "--uninstall"], "--uninstall and --rollback exclude each other"),
        (["--rollback", "--wheel", str(INSTALLER)], "--wheel goes with an install or upgrade, not"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_written(
    args: list[str], reason: str, tmp_path: Path
) -> None:
    result = run_installer(tmp_path, *args)
    assert result.returncode == 2
    assert result.stderr.startswith(f"install-kiosk.sh: {reason}")
    assert list(tmp_path.iterdir()) == []
