"""The doctor's judgements (pure) at their boundaries, and what the first two checks find in files:
settings still at packaging/agent.toml's placeholders, secret files with the wrong mode or owner,
the installer's placeholder, a secret in the environment, where each input is taken from."""

from __future__ import annotations

import os
from email.utils import formatdate
from pathlib import Path

import pytest

from telehealth_client.config import load_settings
from telehealth_client.doctor import clock, command, credentials_check, disk, runner, settings_check, unit
from telehealth_client.doctor.inputs import Inputs, choose_inputs
from telehealth_client.doctor.report import Report, Result, skipped
from telehealth_client.settings_check import problems

NOW = 1_750_000_000.0
MB = 1024 * 1024


def date_at(seconds: float) -> str:
    """An HTTP Date header for ``seconds`` since the epoch (whole seconds, as servers send it)."""
    return formatdate(seconds, usegmt=True)


@pytest.mark.parametrize(
    ("clinic_offset", "status", "said"),
    [
        (0.0, "pass", "within 5 s of the clinic backend's"),
        (-4.0, "pass", "within 5 s"),
        (-7.0, "warn", "this clock is 7 s ahead of the clinic backend's (more than 5 s)"),
        (30.0, "warn", "this clock is 30 s behind the clinic backend's"),
        (-59.0, "warn", "59 s ahead"),
        (-62.0, "fail", "this clock is 62 s ahead of the clinic backend's (more than 60 s): set the time"),
        (3600.0, "fail", "this clock is 3600 s behind"),
    ],
)
def test_the_clock_is_judged_against_the_clinics_date(clinic_offset: float, status: str, said: str) -> None:
    # The clinic's Date names the start of its second: its clock is taken as the middle of it.
    result = clock.judge_skew(date_at(NOW + clinic_offset), NOW + 0.4, NOW + 0.6)
    assert (result.name, result.status) == ("clock", status), result
    assert said in result.summary


def test_a_missing_or_unreadable_date_is_not_a_verdict() -> None:
    assert clock.judge_skew(None, NOW, NOW).status == "skip"
    unreadable = clock.judge_skew("yesterday, around noon", NOW, NOW)
    assert (unreadable.status, unreadable.summary) == (
        "skip",
        "not compared: the clinic backend's Date header cannot be read",
    )


@pytest.mark.parametrize(
    ("free", "status"),
    [(199 * MB, "fail"), (200 * MB, "warn"), (1023 * MB, "warn"), (1024 * MB, "pass")],
)
def test_free_disk_is_judged_at_its_limits(free: int, status: str) -> None:
    state = Path("/var/lib/telehealth-agent")
    result = disk.judge_free(state, state, free, 100 * 1024 * MB)
    assert result.status == status
    assert result.summary.startswith(f"{free // MB} MB free of 100 GB at /var/lib/telehealth-agent")


def test_a_state_dir_not_made_yet_is_measured_where_it_will_be(tmp_path: Path) -> None:
    state = tmp_path / "not" / "yet"
    assert disk.existing(state) == tmp_path
    result = disk.check_disk(state)
    assert f"at {state} (not there yet; measured at {tmp_path})" in result.summary


def test_the_units_score_is_read_from_systemd_analyze() -> None:
    unit_path = Path("/etc/systemd/system/kiosk.service")
    report = "...\n→ Overall exposure level for kiosk.service: 1.3 OK 🙂\n"
    assert unit.judge_score(unit_path, report, "") == Result(
        "unit", "pass", f"{unit_path}: exposure 1.3 (at most 2)"
    )
    weakened = unit.judge_score(unit_path, report.replace("1.3 OK 🙂", "2.1 OK 🙂"), "")
    assert (
        weakened.status == "fail" and "exposure 2.1, over 2: its sandboxing was weakened" in weakened.summary
    )
    broken = unit.judge_score(unit_path, "", "Failed to load unit\nkiosk.service: bad setting\n")
    assert broken.summary.endswith("could not score it: kiosk.service: bad setting")


def test_no_unit_names_the_installer(tmp_path: Path) -> None:
    assert unit.check_unit(None).summary.startswith(
        "no unit at /etc/systemd/system/kiosk.service: scripts/install-kiosk.sh installs it"
    )
    assert unit.check_unit(tmp_path / "kiosk.service").summary == f"no unit at {tmp_path / 'kiosk.service'}"


def test_placeholder_settings_are_named_with_where_to_set_them(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        'role = "provider"\nuser_id = "kiosk-unconfigured"\nclinic_url = "https://clinic.example.invalid"\n'
    )
    loaded = settings_check.load(
        Inputs(config, None, {"TELEHEALTH_DEPARTMENT_ID": "dept-unconfigured"}, None)
    )
    assert loaded.result.status == "fail"
    assert loaded.result.summary == f"{config}: 4 settings left to fill in"
    assert loaded.result.details == (
        f"user_id: still the placeholder 'kiosk-unconfigured': set user_id in {config}",
        f"organization_id: still the placeholder 'org-unconfigured': set organization_id in {config}",
        "department_id: still the placeholder 'dept-unconfigured': set TELEHEALTH_DEPARTMENT_ID",
        f"clinic_url: still the placeholder 'https://clinic.example.invalid': set clinic_url in {config}",
    )


def test_the_doctor_demands_of_a_kiosk_what_run_demands_and_no_department(tmp_path: Path) -> None:
    # A kiosk gets its department with each check-in: run starts without one, so doctor passes it.
    config = tmp_path / "agent.toml"
    config.write_text('role = "patient"\ndepartment_id = "dept-unconfigured"\n')
    loaded = settings_check.load(Inputs(config, None, {}, None))
    assert [line.split(":")[0] for line in loaded.result.details] == ["user_id", "organization_id"]
    assert loaded.base is not None
    assert [name for name, _ in settings_check.incomplete_settings(loaded.base)] == [
        line.split(":")[0] for line in problems(loaded.base) if "placeholder" in line
    ]


def test_complete_settings_pass_and_the_completeness_check_is_one_function() -> None:
    settings = load_settings(
        environ={
            "TELEHEALTH_USER_ID": "kiosk-lobby-2",
            "TELEHEALTH_ORGANIZATION_ID": "org-1",
            "TELEHEALTH_DEPARTMENT_ID": "er",
            "TELEHEALTH_CLINIC_URL": "https://clinic.hospital.example",
        }
    )
    assert settings_check.incomplete_settings(settings) == []
    assert settings_check.incomplete_settings(
        settings.model_copy(update={"clinic_url": "https://invalid"})
    ) == [("clinic_url", "still the placeholder 'https://invalid'")]


def test_settings_that_do_not_load_say_why_and_keep_secrets_to_the_credentials_check(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('api_host = "0.0.0.0"\n')
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "cipher_key").write_text("short")
    (credentials / "cipher_key").chmod(0o600)
    loaded = settings_check.load(
        Inputs(config, credentials, {"CREDENTIALS_DIRECTORY": str(credentials)}, None)
    )
    assert (loaded.base, loaded.settings, loaded.result.status) == (None, None, "fail")
    assert loaded.result.details == (
        "api_host (config file): must be a loopback address (127.0.0.1, ::1 or localhost)",
    )


FILLED = {
    "publish_key": "pub-c-0123",
    "subscribe_key": "sub-c-0123",
    "cipher_key": "a-cipher-key-of-32-characters-00",
    "device_credential": "device-credential-0123",
    "api_token": "0123456789abcdef",
}


def credentials_dir(tmp_path: Path, **values: str) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir(mode=0o700)
    for name, value in {**FILLED, **values}.items():
        path = directory / name
        path.write_text(f"{value}\n")
        path.chmod(0o600)
    return directory


def check(directory: Path, environ: dict[str, str] | None = None) -> Result:
    env = {**(environ or {}), "CREDENTIALS_DIRECTORY": str(directory)}
    return credentials_check.check_credentials(Inputs(None, directory, env, None), None, ())


def test_usable_root_only_credentials_pass(tmp_path: Path) -> None:
    directory = credentials_dir(tmp_path)
    assert check(directory) == Result(
        "credentials", "pass", f"5 secrets present, each readable only by its owner ({directory})"
    )


def test_each_credential_problem_is_named_with_its_fix(tmp_path: Path) -> None:
    directory = credentials_dir(
        tmp_path, device_credential="FILL-IN: replace this whole file with it.\n(Until then...)"
    )
    (directory / "publish_key").chmod(0o644)
    (directory / "subscribe_key").unlink()
    (directory / "cipher_key").write_text("too-short\n")
    result = check(directory)
    assert (result.status, result.summary) == ("fail", f"4 problems ({directory})")
    assert result.details == (
        f"publish_key: {directory / 'publish_key'} can be read by other users (mode 0644); "
        f"run: chmod 600 {directory / 'publish_key'}",
        "subscribe_key: missing: put the PubNub subscribe key of the keyset in "
        f"{directory / 'subscribe_key'} (root's, mode 0600)",
        f"cipher_key: {directory / 'cipher_key'}: must be at least 16 characters (found 9)",
        "device_credential: still the installer's placeholder: put this device's credential for the clinic "
        f"backend in {directory / 'device_credential'}, on one line",
    )
    assert not any(value in "\n".join(result.details) for value in FILLED.values())


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_credential_owned_by_another_user_is_named(tmp_path: Path) -> None:
    directory = credentials_dir(tmp_path)
    os.chown(directory / "api_token", 65534, 65534)
    assert check(directory).details == (
        f"api_token: {directory / 'api_token'} belongs to user ID 65534: "
        f"run: chown root:root {directory / 'api_token'}",
    )


def test_a_directory_others_may_write_is_named(tmp_path: Path) -> None:
    directory = credentials_dir(tmp_path)
    directory.chmod(0o777)
    assert check(directory).summary == (
        f"{directory} can be written by other users (mode 0777): run: chmod 700 {directory}"
    )


def test_secrets_in_the_environment_and_the_secret_key_are_warnings(tmp_path: Path) -> None:
    directory = credentials_dir(tmp_path)
    (directory / "api_token").unlink()
    result = check(
        directory, {"TELEHEALTH_API_TOKEN": "from-the-environment", "TELEHEALTH_SECRET_KEY": "sec-c"}
    )
    assert result.status == "warn"
    assert result.details == (
        "secret_key: from the environment (TELEHEALTH_SECRET_KEY): the service takes secrets only as files "
        "(LoadCredential=); fine for development",
        "secret_key: set (TELEHEALTH_SECRET_KEY): only the development clinic uses it; remove it",
        "api_token: from the environment (TELEHEALTH_API_TOKEN): the service takes secrets only as files "
        "(LoadCredential=); fine for development",
    )


def test_the_api_token_is_needed_only_with_the_api_on(tmp_path: Path) -> None:
    directory = credentials_dir(tmp_path)
    (directory / "api_token").unlink()
    base = load_settings(environ={"TELEHEALTH_API_ENABLED": "false"})
    env = {"CREDENTIALS_DIRECTORY": str(directory)}
    assert credentials_check.check_credentials(Inputs(None, directory, env, None), base, ()).status == "pass"
    assert check(directory).details[0].startswith("api_token: missing: put the local API's bearer token")


def test_inputs_default_to_the_installed_paths_when_there(tmp_path: Path) -> None:
    config, credentials, unit_file = (
        tmp_path / "agent.toml",
        tmp_path / "credentials",
        tmp_path / "kiosk.service",
    )
    paths = {
        "installed_config": config,
        "installed_credentials": credentials,
        "installed_unit": unit_file,
        "repository_unit": tmp_path / "repo.service",
    }
    assert choose_inputs(None, None, None, {}, **paths) == Inputs(None, None, {}, None)
    for path in (config, unit_file):
        path.touch()
    credentials.mkdir()
    chosen = choose_inputs(None, None, None, {"HOME": "/root"}, **paths)
    assert chosen == Inputs(
        config, credentials, {"HOME": "/root", "CREDENTIALS_DIRECTORY": str(credentials)}, unit_file
    )
    # The environment's own, and the command line's, come first.
    given = choose_inputs(
        None, None, None, {"TELEHEALTH_CONFIG": "/x.toml", "CREDENTIALS_DIRECTORY": "/run/c"}, **paths
    )
    assert (given.config, given.credentials) == (None, Path("/run/c"))
    assert choose_inputs(Path("/a.toml"), Path("/c"), Path("/u"), {}, **paths).unit == Path("/u")


def test_only_a_skip_that_was_asked_for_passes() -> None:
    passing = Result("disk", "pass", "fine")
    assert Report((passing, skipped("clock", "left out (--skip)", asked=True))).passed
    assert not Report((passing, skipped("clock", "not run: the settings are not complete"))).passed
    assert not Report((passing, Result("unit", "fail", "no unit"))).passed
    assert Report((Result("pubnub", "warn", "no TLS"),)).verdict() == "doctor: PASS (1 with a warning)"


def test_the_commands_check_names_are_the_runners() -> None:
    assert command.SKIPPABLE == runner.SKIPPABLE
