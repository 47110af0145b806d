"""``telehealth-agent config`` in a child process: each setting's value and where it came from
(default, the TOML file, an environment variable, a ``_FILE``, a systemd credential, in that
order of precedence, reversed), secrets only as set (and from where) or unset; never a secret
value, not even when the settings are refused (exit 2, one line per problem)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import AGENT, Process, clean_environment

pytestmark = pytest.mark.integration

# Canary secrets: none of them, nor a part of one, may be printed.
CIPHER_CANARY = "cipher-canary-7f3a9c1e5b"
PUBLISH_CANARY = "pub-canary-2b8d4e6f"
SUBSCRIBE_CANARY = "sub-canary-9a1c3e5d"
CREDENTIAL_CANARY = "device-canary-4e7a0b3c"
CANARIES = (CIPHER_CANARY, PUBLISH_CANARY, SUBSCRIBE_CANARY, CREDENTIAL_CANARY)


def secret_file(path: Path, value: str) -> Path:
    path.write_text(f"{value}\n")
    path.chmod(0o600)
    return path


async def show_config(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await Process.spawn(*AGENT, "config", *args, env=clean_environment(env))
    return await process.finish()


def shown(out: str) -> dict[str, str]:
    """Each printed line by its setting's name."""
    return {line.split(" ", 1)[0].rstrip(":"): line for line in out.splitlines()}


def assert_no_canary(text: str) -> None:
    for canary in CANARIES:
        # A third of a canary is already too much of it.
        assert canary[: len(canary) // 3] not in text


async def test_each_value_is_shown_with_its_source_and_no_secret(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    secret_file(credentials / "cipher_key", CIPHER_CANARY)
    secret_file(credentials / "device_credential", "overridden-by-the-environment")
    publish = secret_file(tmp_path / "publish_key", PUBLISH_CANARY)
    settings = tmp_path / "agent.toml"
    settings.write_text(
        'user_id = "kiosk-from-file"\nclinic_url = "https://clinic.example"\napi_port = 8471\n'
    )
    env = {
        "CREDENTIALS_DIRECTORY": str(credentials),
        "TELEHEALTH_PUBLISH_KEY_FILE": str(publish),
        "TELEHEALTH_SUBSCRIBE_KEY": SUBSCRIBE_CANARY,
        "TELEHEALTH_DEVICE_CREDENTIAL": CREDENTIAL_CANARY,
        "TELEHEALTH_API_PORT": "8472",  # beats the file's 8471
    }
    code, out, err = await show_config(env, "--config", str(settings))
    assert code == 0, err
    lines = shown(out)
    assert lines["role"] == 'role = "patient"  (default)'
    assert lines["user_id"] == f'user_id = "kiosk-from-file"  (config file {settings})'
    assert lines["api_port"] == "api_port = 8472  (environment TELEHEALTH_API_PORT)"
    assert lines["publish_key"] == f"publish_key: set (from file {publish} (TELEHEALTH_PUBLISH_KEY_FILE))"
    assert lines["subscribe_key"] == "subscribe_key: set (from environment TELEHEALTH_SUBSCRIBE_KEY)"
    assert lines["cipher_key"] == f"cipher_key: set (from systemd credential {credentials / 'cipher_key'})"
    assert (
        lines["device_credential"] == "device_credential: set (from environment TELEHEALTH_DEVICE_CREDENTIAL)"
    )
    assert lines["api_token"] == "api_token: unset"
    assert lines["state_dir"].endswith("(environment TELEHEALTH_STATE_DIR)")  # clean_environment's own
    assert_no_canary(out + err)


async def test_invalid_settings_exit_2_naming_each_problem_and_no_secret(tmp_path: Path) -> None:
    settings = tmp_path / "agent.toml"
    settings.write_text('user_idd = "kiosk-typo"\n')
    short_key = CIPHER_CANARY[:10]  # under 16 characters: refused
    env = {"TELEHEALTH_CIPHER_KEY": short_key, "TELEHEALTH_PUBLISH_KEY": PUBLISH_CANARY}
    code, out, err = await show_config(env, "--config", str(settings))
    assert (code, out) == (2, "")
    problems = err.splitlines()
    assert (
        "telehealth-agent: config: user_idd (config file): unknown setting; did you mean user_id?" in problems
    )
    too_short = "cipher_key (TELEHEALTH_CIPHER_KEY): must be at least 16 characters (found 10)"
    assert f"telehealth-agent: config: {too_short}" in problems
    assert_no_canary(out + err)
