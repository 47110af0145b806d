import re
from pathlib import Path

import pytest

from telehealth_client.config import ConfigError, Role, load_settings

BASE = {"TELEHEALTH_USER_ID": "kiosk-7", "TELEHEALTH_ORGANIZATION_ID": "clinic-north"}


def test_environment_sets_values() -> None:
    settings = load_settings(
        environ={
            **BASE,
            "TELEHEALTH_ROLE": "provider",
            "TELEHEALTH_API_PORT": "9001",
            "TELEHEALTH_SSL": "false",
        }
    )
    assert settings.role is Role.PROVIDER
    assert settings.user_id == "kiosk-7"
    assert settings.api_port == 9001
    assert settings.ssl is False


def test_defaults_are_safe() -> None:
    settings = load_settings(environ={})
    assert settings.relay_only is True
    assert settings.ssl is True
    assert settings.api_host == "127.0.0.1"


def test_toml_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('user_id = "from-file"\ndepartment_id = "cardiology"\napi_port = 8100\n')
    settings = load_settings(config, environ={"TELEHEALTH_API_PORT": "8200"})
    assert settings.user_id == "from-file"
    assert settings.department_id == "cardiology"
    assert settings.api_port == 8200


def test_config_path_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('department_id = "oncology"\n')
    settings = load_settings(environ={"TELEHEALTH_CONFIG": str(config)})
    assert settings.department_id == "oncology"


def test_secrets_are_never_printed() -> None:
    settings = load_settings(environ={"TELEHEALTH_CIPHER_KEY": "SUPER-SECRET-CIPHER"})
    assert "SUPER-SECRET-CIPHER" not in repr(settings)
    assert "SUPER-SECRET-CIPHER" not in str(settings.redacted())
    assert settings.redacted()["cipher_key"] == "<set>"
    assert settings.redacted()["api_token"] == "<unset>"


def test_every_problem_is_reported_on_its_own_line_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            environ={
                "TELEHEALTH_USER_ID": "dr.smith",
                "TELEHEALTH_DEPARTMENT_ID": "*",
                "TELEHEALTH_ROLE": "surgeon",
                "TELEHEALTH_API_PORT": "eighty",
                "TELEHEALTH_API_HOST": "0.0.0.0",
                "TELEHEALTH_USERID": "typo",
                "TELEHEALTH_CIPHER_KEY": "must-not-appear-anywhere",
            }
        )
    problems = caught.value.problems
    assert len(problems) == 6
    joined = "\n".join(problems)
    assert "TELEHEALTH_USERID: unknown setting; did you mean TELEHEALTH_USER_ID?" in joined
    assert "user_id (TELEHEALTH_USER_ID): may contain only letters, digits, '_' and '-' (found '.')" in joined
    assert "department_id (TELEHEALTH_DEPARTMENT_ID)" in joined and "'*'" in joined
    assert "role (TELEHEALTH_ROLE)" in joined
    assert "api_port (TELEHEALTH_API_PORT)" in joined
    assert "api_host (TELEHEALTH_API_HOST): must be a loopback address" in joined
    assert "must-not-appear" not in joined


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("user_id = ", "not valid TOML"),
        ('nonsense = "x"\n', "nonsense (config file): unknown setting"),
        ('user_idd = "x"\n', "user_idd (config file): unknown setting; did you mean user_id?"),
        # A value from the file names the file, not an environment variable nobody set.
        ('clinic_url = "ftp://x"\n', "clinic_url (config file): must start with http"),
        ('ssl = "no"\n', "ssl (config file): must be true or false (a TOML boolean, not a string)"),
        ('media = "off"\n', "media (config file): must be true or false (a TOML boolean, not a string)"),
        (
            "relay_only = 0\n",
            "relay_only (config file): must be true or false (a TOML boolean, not an integer)",
        ),
        ('log_level = "LOUD"\n', "log_level"),
        ("reconnect_min_seconds = 10\nreconnect_max_seconds = 1\n", "reconnect_max_seconds"),
    ],
)
def test_bad_config_files_are_explained(tmp_path: Path, toml: str, expected: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(config, environ={})


def test_missing_config_file_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.toml", environ={})
    with pytest.raises(ConfigError, match=re.escape("TELEHEALTH_CONFIG: is empty")):
        load_settings(environ={"TELEHEALTH_CONFIG": ""})


def test_device_settings_from_a_toml_table_and_from_json(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('camera = "/dev/video2"\n[device_thresholds.camera]\ndark_fail = 20.0\n')
    settings = load_settings(config, environ={"TELEHEALTH_MICROPHONE": "USB Audio"})
    assert settings.camera == "/dev/video2"
    assert settings.microphone == "USB Audio"
    assert settings.device_thresholds.camera.dark_fail == 20.0
    assert settings.device_thresholds.camera.dark_warn == 60.0  # untouched defaults stay
    env = {"TELEHEALTH_DEVICE_THRESHOLDS": '{"microphone": {"frames": 9600}}'}
    assert load_settings(environ=env).device_thresholds.microphone.frames == 9600


def test_bad_device_thresholds_are_explained() -> None:
    with pytest.raises(
        ConfigError, match=re.escape("device_thresholds (TELEHEALTH_DEVICE_THRESHOLDS): not valid JSON")
    ):
        load_settings(environ={"TELEHEALTH_DEVICE_THRESHOLDS": "{nope"})
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"TELEHEALTH_DEVICE_THRESHOLDS": '{"camera": {"frames": 1, "colour": 3}}'})
    assert any(problem.startswith("device_thresholds.camera.frames") for problem in caught.value.problems)
    assert any(problem.startswith("device_thresholds.camera.colour") for problem in caught.value.problems)


def test_a_config_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes('user_id = "k\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_settings(config, environ={})


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("telehealth_user_id", "telehealth_user_id: unknown setting; did you mean TELEHEALTH_USER_ID?"),
        ("Telehealth_Api_Port", "Telehealth_Api_Port: unknown setting; did you mean TELEHEALTH_API_PORT?"),
        (
            "telehealth_cipher_key_file",
            "telehealth_cipher_key_file: unknown setting; did you mean TELEHEALTH_CIPHER_KEY_FILE?",
        ),
        ("TELEHEALTH_ZZZZZZZZZZZZZZZZZZZZZZZZ", "TELEHEALTH_ZZZZZZZZZZZZZZZZZZZZZZZZ: unknown setting"),
    ],
)
def test_unknown_variables_in_any_case_are_reported_with_the_nearest_name(name: str, problem: str) -> None:
    # Only the upper-case spelling is read: any other would be silently ignored.
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={name: "9001"})
    assert caught.value.problems == [problem]


@pytest.mark.parametrize(
    ("origin", "reason"),
    [
        ("127.0.0.1:0", "port must be a number from 1 to 65535 (found '0')"),
        ("127.0.0.1:65536", "port must be a number from 1 to 65535 (found '65536')"),
        ("relay.example:http", "port must be a number from 1 to 65535 (found 'http')"),
        ("relay.example:", "port must be a number from 1 to 65535 (found '')"),
        ("relay.example:-1", "port must be a number from 1 to 65535 (found '-1')"),
        (":8080", "has no host"),
        ("::1:8080", "an IPv6 address must be in brackets: [address]:port"),
        ("[::1:8080", "an IPv6 address needs its closing ']'"),
        ("[::1]8080", "must be host or host:port, without scheme or path"),
        ("https://ps.pndsn.com", "must be host or host:port, without scheme or path"),
    ],
)
def test_bad_origins_are_refused(origin: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"TELEHEALTH_ORIGIN": origin})
    assert caught.value.problems == [f"origin (TELEHEALTH_ORIGIN): {reason}"]


@pytest.mark.parametrize("origin", ["ps.pndsn.com", "127.0.0.1:1", "127.0.0.1:65535", "[::1]:8080", "[::1]"])
def test_good_origins_are_kept(origin: str) -> None:
    assert load_settings(environ={"TELEHEALTH_ORIGIN": origin}).origin == origin


def test_a_toml_boolean_is_read_and_a_value_from_the_environment_names_the_environment(
    tmp_path: Path,
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('ssl = false\nclinic_url = "ftp://from-the-file"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={"TELEHEALTH_CLINIC_URL": "gopher://from-the-environment"})
    assert caught.value.problems == [
        "clinic_url (TELEHEALTH_CLINIC_URL): must start with http:// or https://"
    ]  # the environment's value was the one read, and it is the one named
    assert load_settings(config, environ={"TELEHEALTH_CLINIC_URL": "http://clinic"}).ssl is False
    assert load_settings(environ={"TELEHEALTH_SSL": "no"}).ssl is False  # the environment's words stand
