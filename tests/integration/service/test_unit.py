"""kiosk.service as systemd reads it: ``systemd-analyze verify`` is silent, ``systemd-analyze
security --offline=yes`` scores it 2.0 or lower, and its lines agree with the agent's settings
(every secret a credential or named as left out, the state directory where state_dir points,
memory above the media supervisor's ceiling)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from telehealth_client.config import SECRET_FIELDS, Settings
from tests.support.service import (
    AGENT,
    CREDENTIALS,
    SETTINGS,
    SYSTEM_DEPS,
    UNIT,
    exposure,
    systemd_analyze,
    unit_root,
    unit_settings,
    verify,
)

pytestmark = pytest.mark.integration

MAX_EXPOSURE = 2.0


def test_the_unit_verifies_without_a_word(tmp_path: Path) -> None:
    result = verify(unit_root(tmp_path))
    assert (result.returncode, result.stderr) == (0, "")


def test_verify_catches_a_unit_whose_binary_is_missing(tmp_path: Path) -> None:
    # The silent verify above means something: the same check names a missing ExecStart binary.
    root = unit_root(tmp_path)
    (root / AGENT).unlink()
    result = verify(root)
    assert result.returncode != 0 and "is not executable" in result.stderr


def test_the_unit_exposure_is_at_most_2(tmp_path: Path) -> None:
    score, report = exposure(unit_root(tmp_path))
    assert score <= MAX_EXPOSURE, report


def test_a_missing_systemd_analyze_fails_naming_the_installer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=re.escape(SYSTEM_DEPS)):
        systemd_analyze()


def test_every_secret_is_a_credential_or_named_as_left_out() -> None:
    text = UNIT.read_text()
    credentials = [value.partition(":") for key, value in unit_settings() if key == "LoadCredential"]
    loaded = {name for name, _, _ in credentials}
    assert loaded == {"publish_key", "subscribe_key", "cipher_key", "device_credential", "api_token"}
    # Each from the file the installer writes (root-only, under /etc/telehealth-agent/credentials).
    assert all(source == f"/{CREDENTIALS / name}" for name, _, source in credentials), credentials
    left_out = set(SECRET_FIELDS) - loaded
    comments = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert all(name in comments for name in left_out), left_out
    # Never a secret in the unit itself (an Environment= line is readable by every user).
    environment = [value for key, value in unit_settings() if key == "Environment"]
    assert not [value for value in environment for name in SECRET_FIELDS if name.upper() in value]


def test_the_unit_runs_the_installed_agent_on_its_state_directory() -> None:
    settings = dict(unit_settings())
    assert settings["ExecStart"] == f"/{AGENT} run --config /{SETTINGS}"
    assert settings["StateDirectory"] == "telehealth-agent"
    assert settings["Environment"] == "TELEHEALTH_STATE_DIR=%S/telehealth-agent"
    assert (settings["Type"], settings["NotifyAccess"]) == ("notify", "main")
    assert settings["RestartPreventExitStatus"] == "2"  # the CLI's exit code for bad settings


def test_memory_limits_sit_above_the_media_children_ceiling() -> None:
    settings = dict(unit_settings())
    ceiling = Settings.model_fields["media_memory_ceiling_mb"].default

    def megabytes(value: str) -> int:
        assert value.endswith("M"), value
        return int(value.removesuffix("M"))

    assert ceiling < megabytes(settings["MemoryHigh"]) < megabytes(settings["MemoryMax"])
