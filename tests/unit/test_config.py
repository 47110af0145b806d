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


def test_secrets_from_files_and_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "cipher_key").write_text("systemd-cipher\n")
    (tmp_path / "creds" / "previous_cipher_keys").write_text("old-1\nold-2\n")
    (tmp_path / "api").write_text("api-secret\n")
    settings = load_settings(
        environ={
            "CREDENTIALS_DIRECTORY": str(tmp_path / "creds"),
            "TELEHEALTH_API_TOKEN_FILE": str(tmp_path / "api"),
        }
    )
    assert settings.cipher_key is not None and settings.cipher_key.get_secret_value() == "systemd-cipher"
    assert [key.get_secret_value() for key in settings.previous_cipher_keys] == ["old-1", "old-2"]
    assert settings.api_token is not None and settings.api_token.get_secret_value() == "api-secret"


def test_secrets_are_never_printed() -> None:
    settings = load_settings(environ={"TELEHEALTH_CIPHER_KEY": "SUPER-SECRET-CIPHER"})
    assert "SUPER-SECRET-CIPHER" not in repr(settings)
    assert "SUPER-SECRET-CIPHER" not in str(settings.redacted())
    assert settings.redacted()["cipher_key"] == "<set>"
    assert settings.redacted()["api_token"] == "<unset>"


def test_a_secret_in_the_config_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('cipher_key = "in-a-world-readable-file"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert caught.value.problems == [
        "cipher_key (config file): secrets are not read from the config file; "
        "use TELEHEALTH_CIPHER_KEY_FILE or the systemd credential 'cipher_key'"
    ]
    assert "in-a-world-readable-file" not in str(caught.value)


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
                "TELEHEALTH_CIPHER_KEY": "must-not-appear",
            }
        )
    problems = caught.value.problems
    assert len(problems) == 6
    joined = "\n".join(problems)
    assert "TELEHEALTH_USERID: unknown setting" in joined
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
        ('clinic_url = "ftp://x"\n', "clinic_url (TELEHEALTH_CLINIC_URL): must start with http"),
        ('log_level = "LOUD"\n', "log_level"),
        ("reconnect_min_seconds = 10\nreconnect_max_seconds = 1\n", "reconnect_max_seconds"),
    ],
)
def test_bad_config_files_are_explained(tmp_path: Path, toml: str, expected: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(config, environ={})


def test_missing_config_and_secret_files_are_explained(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.toml", environ={})
    with pytest.raises(ConfigError, match="TELEHEALTH_CIPHER_KEY_FILE: cannot read the secret file"):
        load_settings(environ={"TELEHEALTH_CIPHER_KEY_FILE": str(tmp_path / "absent")})


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


def test_empty_or_undecodable_secrets_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "binary").write_bytes(b"\xff\xfe\x00key")
    with pytest.raises(ConfigError) as caught:
        load_settings(
            environ={
                "TELEHEALTH_CIPHER_KEY_FILE": str(tmp_path / "empty"),
                "TELEHEALTH_API_TOKEN_FILE": str(tmp_path / "binary"),
            }
        )
    assert sorted(caught.value.problems) == [
        "TELEHEALTH_API_TOKEN_FILE: the secret file is not UTF-8 text",
        "TELEHEALTH_CIPHER_KEY_FILE: the secret file is empty",
    ]
    with pytest.raises(ConfigError, match=re.escape("cipher_key (TELEHEALTH_CIPHER_KEY): must not be empty")):
        load_settings(environ={"TELEHEALTH_CIPHER_KEY": "  "})
    config = tmp_path / "latin1.toml"
    config.write_bytes('user_id = "k\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_settings(config, environ={})
