"""Settings an outside review found too trusting: a settings file or CA bundle another user could
change (they decide whom the agent trusts), booleans taken as numbers, relative paths the service
(working directory /) would read elsewhere, a symlinked secret whose fix was ``chmod`` on the link,
and load errors that hid the placeholders ``run`` would refuse next (``load_complete``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from telehealth_client.config import ConfigError, load_settings
from telehealth_client.doctor import credentials_check
from telehealth_client.doctor import settings_check as doctor_settings
from telehealth_client.doctor.inputs import Inputs
from telehealth_client.settings_check import load_complete
from tests.support.tls_front import ThrowawayCa

NOBODY = 65534
COMPLETE = {
    "TELEHEALTH_USER_ID": "kiosk-lobby-2",
    "TELEHEALTH_ORGANIZATION_ID": "org-general",
    "TELEHEALTH_CLINIC_URL": "https://clinic.general.example",
}


def problems_of(config: Path | None, environ: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as refused:
        load_settings(config, environ=environ)
    return refused.value.problems


def settings_file(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


# -- whom the agent trusts ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o666, 0o664, 0o646, 0o620])
def test_a_settings_file_others_can_write_is_refused_with_its_mode_and_the_fix(
    tmp_path: Path, mode: int
) -> None:
    config = settings_file(tmp_path / "agent.toml", 'clinic_url = "https://evil.example"\n', mode)
    assert problems_of(config, {}) == [
        f"config file {config} can be written by other users (mode {mode:04o}), who could change whom "
        f"the agent trusts; run: chmod go-w {config}"
    ]


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o600, 0o444])
def test_a_settings_file_only_its_owner_can_write_is_read(tmp_path: Path, mode: int) -> None:
    config = settings_file(tmp_path / "agent.toml", 'clinic_url = "https://clinic.example"\n', mode)
    assert load_settings(config, environ={}).clinic_url == "https://clinic.example"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_settings_file_of_another_non_root_user_is_refused(tmp_path: Path) -> None:
    config = settings_file(tmp_path / "agent.toml", 'clinic_url = "https://evil.example"\n', 0o644)
    os.chown(config, NOBODY, NOBODY)
    (problem,) = problems_of(config, {})
    assert problem.startswith(f"config file {config} belongs to user ID {NOBODY} (mode 0644)")
    assert problem.endswith(f"run: chown root {config} && chmod go-w {config}")


def test_a_ca_bundle_others_can_write_is_refused_naming_the_setting(tmp_path: Path) -> None:
    ca = ThrowawayCa.make(tmp_path / "ca")
    assert load_settings(environ={"TELEHEALTH_CA_BUNDLE": str(ca.ca_file)}).ca_bundle == ca.ca_file
    ca.ca_file.chmod(0o666)
    assert problems_of(None, {"TELEHEALTH_CA_BUNDLE": str(ca.ca_file)}) == [
        f"ca_bundle (TELEHEALTH_CA_BUNDLE): {ca.ca_file} can be written by other users (mode 0666), "
        f"who could change whom the agent trusts; run: chmod go-w {ca.ca_file}"
    ]


def test_the_doctor_flags_a_world_writable_settings_file(tmp_path: Path) -> None:
    config = settings_file(tmp_path / "agent.toml", 'user_id = "kiosk-lobby-2"\n', 0o666)
    loaded = doctor_settings.load(Inputs(config, None, {}, None))
    assert loaded.result.status == "fail"
    assert any(f"chmod go-w {config}" in line and "mode 0666" in line for line in loaded.result.details)


# -- numbers and paths --------------------------------------------------------------------------


def test_a_toml_boolean_is_not_a_number(tmp_path: Path) -> None:
    config = settings_file(
        tmp_path / "agent.toml",
        "retention_days = true\napi_port = true\npresence_timeout_seconds = false\n"
        "reconnect_max_seconds = true\n",
        0o644,
    )
    assert sorted(problems_of(config, {})) == [
        "api_port (config file): must be a number, not true",
        "presence_timeout_seconds (config file): must be a number, not false",
        "reconnect_max_seconds (config file): must be a number, not true",
        "retention_days (config file): must be a number, not true",
    ]


def test_numbers_from_the_environment_still_parse() -> None:
    settings = load_settings(environ={"TELEHEALTH_RETENTION_DAYS": "7", "TELEHEALTH_API_PORT": "1"})
    assert (settings.retention_days, settings.api_port) == (7, 1)


@pytest.mark.parametrize("name", ["state_dir", "ca_bundle", "api_socket"])
def test_a_relative_path_is_refused_since_the_service_runs_in_root(name: str) -> None:
    assert problems_of(None, {f"TELEHEALTH_{name.upper()}": "var/agent"}) == [
        f"{name} (TELEHEALTH_{name.upper()}): must be an absolute path (found 'var/agent'; the service "
        "runs in /, so a relative path would not mean the same place)"
    ]


# -- a symlinked secret -------------------------------------------------------------------------


def test_a_symlinked_secret_is_named_as_a_link_and_never_chmod_advised(tmp_path: Path) -> None:
    target = settings_file(tmp_path / "hostname", "kiosk-host\n", 0o644)
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "cipher_key").symlink_to(target)
    expected = (
        f"cipher_key: {credentials / 'cipher_key'} is a symbolic link to {target}, which can be read by "
        "other users (mode 0644); replace the link with a regular file holding the secret, mode 0600 "
        "(chmod on the link would change its target)"
    )
    (refused,) = problems_of(None, {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert refused == expected.replace(
        "cipher_key: ", f"cipher_key (credential {credentials / 'cipher_key'}): "
    )
    result = credentials_check.check_credentials(
        Inputs(None, credentials, {"CREDENTIALS_DIRECTORY": str(credentials)}, None), None, ()
    )
    assert expected in result.details
    assert not any("chmod 600" in line for line in result.details)
    assert target.stat().st_mode & 0o777 == 0o644


# -- one round of problems ----------------------------------------------------------------------


def placeholder_credentials(directory: Path) -> Path:
    """The installer's credential files: each still its FILL-IN placeholder, the API token real."""
    directory.mkdir(mode=0o700)
    for name in ("publish_key", "subscribe_key", "cipher_key", "device_credential"):
        settings_file(directory / name, f"FILL-IN: replace this whole file with the {name}\n", 0o600)
    settings_file(directory / "api_token", "a-generated-api-token\n", 0o600)
    return directory


def test_placeholder_credentials_and_placeholder_settings_are_told_in_one_round(tmp_path: Path) -> None:
    config = settings_file(
        tmp_path / "agent.toml",
        'role = "patient"\nuser_id = "kiosk-unconfigured"\norganization_id = "org-unconfigured"\n'
        'clinic_url = "https://clinic.example.invalid"\n',
        0o644,
    )
    credentials = placeholder_credentials(tmp_path / "credentials")
    with pytest.raises(ConfigError) as refused:
        load_complete(config, {"CREDENTIALS_DIRECTORY": str(credentials)})
    named = [problem.split(" ")[0].rstrip(":") for problem in refused.value.problems]
    secrets = ["publish_key", "subscribe_key", "cipher_key", "device_credential"]
    assert sorted(named) == sorted([*secrets, "user_id", "organization_id", "clinic_url"])


def test_a_secret_in_the_settings_file_does_not_hide_a_bad_user_id(tmp_path: Path) -> None:
    config = settings_file(
        tmp_path / "agent.toml", 'cipher_key = "in-the-file-0001"\nuser_id = "a b"\n', 0o644
    )
    named = [problem.split(" ")[0] for problem in problems_of(config, {})]
    assert named == ["cipher_key", "user_id"]


def test_a_missing_secret_is_told_beside_a_refused_one_but_a_good_one_is_not(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    settings_file(credentials / "cipher_key", "short", 0o600)  # refused: under 16 characters
    settings_file(credentials / "subscribe_key", "sub-c-good", 0o600)
    settings_file(credentials / "api_token", "api-token-good", 0o600)
    with pytest.raises(ConfigError) as refused:
        load_complete(None, {**COMPLETE, "CREDENTIALS_DIRECTORY": str(credentials)})
    lines = refused.value.problems
    assert [line.split(" ")[0].rstrip(":") for line in lines] == [
        "cipher_key",
        "publish_key",
        "device_credential",
    ]
    assert lines[1].startswith("publish_key: not set; looked in TELEHEALTH_PUBLISH_KEY, ")
    assert str(credentials / "publish_key") in lines[1]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_symlinked_secret_of_another_user_is_never_chown_advised(tmp_path: Path) -> None:
    target = settings_file(tmp_path / "their-file", "a-secret-of-someone-else\n", 0o600)
    os.chown(target, NOBODY, NOBODY)
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "cipher_key").symlink_to(target)
    result = credentials_check.check_credentials(
        Inputs(None, credentials, {"CREDENTIALS_DIRECTORY": str(credentials)}, None), None, ()
    )
    assert (
        f"cipher_key: {credentials / 'cipher_key'} is a symbolic link to a file of user ID {NOBODY}: "
        "replace the link with a regular file holding the secret, root's, mode 0600"
    ) in result.details
    assert not any("chown" in line for line in result.details)
