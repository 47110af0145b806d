"""settings_check: what each role needs before ``run`` may say READY, and when development mode
(the development relay: a loopback origin over plain HTTP) lets the device credential and the
placeholder organization and department IDs stand."""

from __future__ import annotations

from pathlib import Path

import pytest

from telehealth_client.config import load_settings
from telehealth_client.settings_check import development_mode, problems

COMPLETE = {
    "TELEHEALTH_USER_ID": "kiosk-lobby-2",
    "TELEHEALTH_ORGANIZATION_ID": "org-general",
    "TELEHEALTH_DEPARTMENT_ID": "er",
    "TELEHEALTH_PUBLISH_KEY": "pub-c-kiosk",
    "TELEHEALTH_SUBSCRIBE_KEY": "sub-c-kiosk",
    "TELEHEALTH_CIPHER_KEY": "settings-check-cipher-key",
    "TELEHEALTH_DEVICE_CREDENTIAL": "device-credential-kiosk",
    "TELEHEALTH_API_TOKEN": "api-token-kiosk",
    "TELEHEALTH_CLINIC_URL": "https://clinic.general.example",
}


def named(found: list[str]) -> list[str]:
    return [line.split(":")[0] for line in found]


@pytest.mark.parametrize(
    ("origin", "ssl", "development"),
    [
        ("127.0.0.1:8090", "false", True),
        ("localhost:8090", "false", True),
        ("[::1]:8090", "false", True),
        ("127.0.0.1:8090", "true", False),  # TLS: not the development relay
        ("ps.pndsn.com", "false", False),  # PubNub over plain HTTP is still PubNub
        ("10.0.0.5:8090", "false", False),
    ],
)
def test_development_mode_is_the_loopback_relay_over_plain_http(
    origin: str, ssl: str, development: bool, tmp_path: Path
) -> None:
    settings = load_settings(environ={"TELEHEALTH_ORIGIN": origin, "TELEHEALTH_SSL": ssl})
    assert development_mode(settings) is development


@pytest.mark.parametrize("role", ["patient", "provider", "nurse"])
def test_complete_settings_have_no_problem(role: str) -> None:
    assert problems(load_settings(environ={**COMPLETE, "TELEHEALTH_ROLE": role})) == []


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        # A kiosk takes the department from each check-in: its own is not needed.
        ("patient", ["publish_key", "device_credential", "user_id", "organization_id"]),
        ("provider", ["publish_key", "device_credential", "user_id", "organization_id", "department_id"]),
        ("nurse", ["publish_key", "device_credential", "user_id", "organization_id", "department_id"]),
    ],
)
def test_each_role_names_what_it_lacks(role: str, expected: list[str]) -> None:
    settings = load_settings(
        environ={
            "TELEHEALTH_ROLE": role,
            "TELEHEALTH_SUBSCRIBE_KEY": "sub-c-kiosk",
            "TELEHEALTH_CIPHER_KEY": "settings-check-cipher-key",
            "TELEHEALTH_API_TOKEN": "api-token-kiosk",
        }
    )
    found = problems(settings)
    assert named(found) == expected
    # Each says why and how: a missing secret where it was looked for, a placeholder how to set it.
    assert "looked in TELEHEALTH_PUBLISH_KEY" in found[0] and "publishes" in found[0]
    assert "TELEHEALTH_USER_ID" in found[2] and "left unset" in found[2]


def test_every_key_and_the_api_token_are_named_together() -> None:
    found = problems(load_settings(environ={"TELEHEALTH_USER_ID": "kiosk-1"}))
    assert named(found)[:4] == ["subscribe_key", "cipher_key", "publish_key", "api_token"]
    assert "api_token" not in named(problems(load_settings(environ={"TELEHEALTH_API_ENABLED": "false"})))
    assert "api_token" not in named(problems(load_settings(environ={}), serve_api=False))


def test_the_development_relay_needs_no_device_credential_nor_real_organization() -> None:
    development = {
        "TELEHEALTH_ROLE": "provider",
        "TELEHEALTH_USER_ID": "dr-dev",
        "TELEHEALTH_ORIGIN": "127.0.0.1:8090",
        "TELEHEALTH_SSL": "false",
        "TELEHEALTH_PUBLISH_KEY": "pub-c-dev",
        "TELEHEALTH_SUBSCRIBE_KEY": "sub-c-dev",
        "TELEHEALTH_CIPHER_KEY": "settings-check-cipher-key",
        "TELEHEALTH_API_TOKEN": "api-token-dev",
    }
    assert problems(load_settings(environ=development)) == []
    # Its own user ID it still needs: two agents under the placeholder would be one to PubNub.
    del development["TELEHEALTH_USER_ID"]
    assert named(problems(load_settings(environ=development))) == ["user_id"]


def test_the_installers_placeholder_clinic_url_is_named() -> None:
    found = problems(
        load_settings(environ={**COMPLETE, "TELEHEALTH_CLINIC_URL": "https://clinic.example.invalid"})
    )
    assert named(found) == ["clinic_url"]
    assert "installer's placeholder" in found[0]


def test_an_id_from_the_settings_file_says_where_it_came_from(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('user_id = "kiosk-unconfigured"\n')
    environ = {key: value for key, value in COMPLETE.items() if key != "TELEHEALTH_USER_ID"}
    found = problems(load_settings(config, environ=environ))
    assert named(found) == ["user_id"]
    assert f"from config file {config}" in found[0]
