"""scripts/install-kiosk.sh into a throwaway root: the agent alone in its virtual environment,
the unit (which verifies there), root-only credential files with placeholders the agent refuses
and a generated API token, a printout naming what is left to fill in; a second run changes
nothing (a filled-in file included); --uninstall keeps only the state directory; a user other
than root is refused."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from telehealth_client.config import ConfigError, load_settings
from tests.support.service import (
    AGENT,
    CREDENTIALS,
    INSTALLED_UNIT,
    INSTALLER,
    OPT,
    RELEASES,
    REPO,
    SETTINGS,
    SKELETON_DIRECTORIES,
    STATE,
    VENV,
    Installed,
    OverlaidSystem,
    add_system_units,
    exposure,
    installer_copy,
    manifest,
    run_installer,
    system_python,
    system_skeleton,
    unit_root,
    user_database,
    verify,
)

pytestmark = pytest.mark.integration

PLACEHOLDER_SECRETS = ("publish_key", "subscribe_key", "cipher_key", "device_credential")
PLACEHOLDER_SETTINGS = ("user_id", "organization_id", "clinic_url")


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
    # Not asked of a kiosk (it gets its department at each check-in): run and doctor agree.
    assert f"{installed.root / SETTINGS}: department_id\n" not in out
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


def group_lines(root: Path) -> list[str]:
    return [line for line in (root / "etc/group").read_text().splitlines() if line.startswith("telehealth:")]


def test_a_reinstall_after_an_uninstall_adds_the_user_and_group_again(
    installed: Installed, tmp_path: Path
) -> None:
    # `userdel --prefix` reads no login.defs, so it keeps the user's group: the uninstall removes it.
    root = copy_of(installed, tmp_path)
    removed = run_installer(root, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert group_lines(root) == []
    again = run_installer(root, wheel=installed.wheel)
    assert again.returncode == 0, again.stderr
    assert (root / VENV).is_symlink() and (root / AGENT).is_file()
    [user] = [
        line for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("telehealth:")
    ]
    [group] = group_lines(root)
    assert user.split(":")[3] == group.split(":")[2]  # its primary group is the new group


@pytest.mark.parametrize(
    ("members", "login_defs"),
    [
        ("kiosk-app", ""),
        # As on Debian: userdel then removes the user's group too when no one else is in it.
        ("", "USERGROUPS_ENAB yes\n"),
    ],
)
def test_an_existing_telehealth_group_is_the_users_and_outlives_the_uninstall(
    installed: Installed, tmp_path: Path, members: str, login_defs: str
) -> None:
    root = tmp_path / "root"
    system_skeleton(root)
    (root / "etc/login.defs").write_text(login_defs)  # useradd --prefix reads this one
    (root / "etc/group").write_text(f"telehealth:x:4242:{members}\n")
    (root / "etc/gshadow").write_text(f"telehealth:!::{members}\n")
    result = run_installer(root, wheel=installed.wheel)
    assert result.returncode == 0, result.stderr
    [user] = [
        line for line in (root / "etc/passwd").read_text().splitlines() if line.startswith("telehealth:")
    ]
    assert user.split(":")[3] == "4242"
    assert group_lines(root) == [f"telehealth:x:4242:{members}"]
    removed = run_installer(root, "--uninstall")
    assert removed.returncode == 0, removed.stderr
    assert "telehealth:" not in (root / "etc/passwd").read_text()
    assert group_lines(root) == [f"telehealth:x:4242:{members}"]  # not the installer's to remove
    assert "kept the group telehealth: it existed before the install" in removed.stdout


def test_a_user_database_useradd_cannot_write_fails_with_1_and_leaves_nothing(
    installed: Installed, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    system_skeleton(root)
    (root / "etc/gshadow").unlink()
    (root / "etc/gshadow").mkdir()  # useradd: "cannot open .../gshadow", its exit 10
    before = manifest(root)
    result = run_installer(root, wheel=installed.wheel)
    assert result.returncode == 1, result.stdout
    assert "useradd --system" in result.stderr and "nothing else changed" in result.stderr
    assert manifest(root) == before  # the release it had built removed, no unit, no settings


def test_a_step_failing_after_the_user_exits_1_naming_what_it_left(
    installed: Installed, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    system_skeleton(root)
    (root / "etc/telehealth-agent").write_text("not a directory\n")  # the settings cannot go there
    result = run_installer(root, wheel=installed.wheel)
    assert result.returncode == 1, result.stdout
    assert "failed (exit 1)" in result.stderr
    left = f"left as they are: the user telehealth, {root / OPT / 'README.md'}, {root / INSTALLED_UNIT} ("
    assert left in result.stderr
    assert not (root / VENV).exists() and not list(root.glob(f"{RELEASES}/*"))  # the release it built


def test_uninstall_removes_the_units_drop_ins(installed: Installed, tmp_path: Path) -> None:
    # A rotation's drop-in names a credential file the uninstall removes: kept, it would fail the
    # next install's start (243/CREDENTIALS).
    root = copy_of(installed, tmp_path)
    dropins = root / "etc/systemd/system/kiosk.service.d"
    dropins.mkdir()
    (dropins / "previous-cipher-keys.conf").write_text(
        "[Service]\nLoadCredential=previous_cipher_keys:/etc/telehealth-agent/credentials/previous_cipher_keys\n"
    )
    result = run_installer(root, "--uninstall")
    assert result.returncode == 0, result.stderr
    assert not dropins.exists()
    assert f"removed the unit's drop-ins: {dropins}" in result.stdout


def test_a_python_the_service_cannot_see_is_refused(installed: Installed, tmp_path: Path) -> None:
    # A pyenv interpreter under /home: the system's Python bind-mounted there, in a mount namespace.
    system = OverlaidSystem(tmp_path / "system")
    python = Path(os.path.realpath(system_python()))
    prefix = Path(
        subprocess.run(
            [python, "-c", "import sys; print(sys.base_prefix)"], capture_output=True, text=True
        ).stdout.strip()
    )
    hidden = Path("/home/pyenv") / python.relative_to(prefix)
    mount = """set -e
mount -t tmpfs tmpfs /home
mkdir /home/pyenv
mount --bind "$1" /home/pyenv
shift
exec "$@"
"""
    result = system.run(
        "bash", "-c", mount, "hidden", str(prefix), str(INSTALLER), "--wheel", str(installed.wheel),
        python=str(hidden),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"PYTHON={hidden}: its interpreter is {hidden}, under /home" in result.stderr
    assert "PYTHON=/usr/bin/python3" in result.stderr
    assert not system.changed("/opt/telehealth-agent").exists()
    assert not system.changed("/etc/telehealth-agent").exists()
    assert system.calls == []


def test_a_root_install_names_its_root_so_it_is_offered_for_tests_only(installed: Installed) -> None:
    # The release's scripts and pyvenv.cfg name the root: the output is no image for another system.
    shebang = (installed.root / AGENT).read_text().splitlines()[0]
    assert str(installed.root) in shebang
    usage = run_installer(installed.root, "--help").stdout
    assert "(tests only:" in usage and "images" not in usage
    readme = (INSTALLER.parents[1] / "README.md").read_text()
    assert "(tests, images)" not in readme and "`--root DIR` installs under `DIR` for tests only" in readme


def constraint_pins() -> dict[str, str]:
    lines = (REPO / "packaging/constraints.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pairs}


def test_the_constraints_pin_every_runtime_dependency_at_the_tested_version() -> None:
    pins = constraint_pins()
    for line in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"packaging/constraints.txt pins no {name}: run packaging/freeze_constraints.py"
        assert requirement.specifier.contains(pins[name], prereleases=True), (requirement, pins[name])
    # Every pin (theirs included) is what this environment, the one the tests run in, holds.
    stale = {
        name: (version, metadata.version(name))
        for name, version in pins.items()
        if metadata.version(name) != version
    }
    assert not stale, f"pinned, installed: {stale}; run packaging/freeze_constraints.py"


def test_the_installer_installs_under_the_constraints(installed: Installed, tmp_path: Path) -> None:
    # A constraint no version of the agent meets: pip refuses, so it read the file.
    installer = installer_copy(tmp_path / "release", "constraints")
    with (installer.parents[1] / "packaging/constraints.txt").open("a") as constraints:
        constraints.write("telehealth-client==0.0.0\n")
    root = tmp_path / "root"
    system_skeleton(root)
    before = manifest(root)
    result = run_installer(root, wheel=installed.wheel, installer=installer)
    assert result.returncode == 1, result.stdout
    assert f"with {installer.parents[1] / 'packaging/constraints.txt'}" in result.stderr
    assert manifest(root) == before


def test_the_readmes_api_socket_drop_in_verifies_and_keeps_the_exposure(tmp_path: Path) -> None:
    # The README's Local API section: a runtime directory for api_socket, through a drop-in.
    drop_in = "[Service]\nRuntimeDirectory=telehealth-agent\n"
    readme = (REPO / "README.md").read_text()
    escaped = drop_in.replace("\n", "\\n")
    assert f"printf '{escaped}' >/{INSTALLED_UNIT}.d/api-socket.conf" in readme
    plain, _ = exposure(unit_root(tmp_path / "plain"))
    root = unit_root(tmp_path / "socket")
    (root / f"{INSTALLED_UNIT}.d").mkdir()
    (root / f"{INSTALLED_UNIT}.d/api-socket.conf").write_text(drop_in)
    result = verify(root)
    assert (result.returncode, result.stderr) == (0, "")
    with_socket, report = exposure(root)
    assert with_socket == plain, report


def test_the_readmes_local_api_token_is_the_one_the_unit_loads_and_the_installer_makes() -> None:
    readme = (REPO / "README.md").read_text()
    local_api = readme.split("\n## Local API\n", 1)[1].split("\n## ", 1)[0]
    [loaded] = [line for line in (REPO / "kiosk.service").read_text().splitlines() if "=api_token:" in line]
    assert f"`{loaded}`" in local_api
    assert "od -An -tx1 -N32 /dev/urandom" in local_api and "openssl" not in local_api
    assert 'api_socket = "/run/..."' not in local_api  # /run is read-only to the service
