"""The retention's settings: defaults, sources, and bad values refused naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from telehealth_client.config import ConfigError, load_settings
from telehealth_client.retention import MEGABYTE, RetentionPolicy


def test_defaults_keep_30_days_and_report_64_megabytes_waiting() -> None:
    settings = load_settings(environ={})
    assert (settings.retention_days, settings.undelivered_limit_mb) == (30, 64)
    assert RetentionPolicy.from_settings(settings) == RetentionPolicy(30, 64 * MEGABYTE, 3600.0)


def test_the_environment_and_the_file_set_them(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("retention_days = 90\nundelivered_limit_mb = 16\n")
    settings = load_settings(config, environ={"TELEHEALTH_RETENTION_DAYS": "7"})
    assert (settings.retention_days, settings.undelivered_limit_mb) == (7, 16)


DAYS = "retention_days (TELEHEALTH_RETENTION_DAYS): Input should be"
LIMIT = "undelivered_limit_mb (TELEHEALTH_UNDELIVERED_LIMIT_MB): Input should be"


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("RETENTION_DAYS", "0", f"{DAYS} greater than or equal to 1"),
        ("RETENTION_DAYS", "3651", f"{DAYS} less than or equal to 3650"),
        ("RETENTION_DAYS", "two weeks", f"{DAYS} a valid integer"),
        ("UNDELIVERED_LIMIT_MB", "0", f"{LIMIT} greater than or equal to 1"),
        ("UNDELIVERED_LIMIT_MB", "1.5", f"{LIMIT} a valid integer"),
    ],
)
def test_a_bad_value_is_refused_naming_the_setting(variable: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={f"TELEHEALTH_{variable}": value})
    assert len(refused.value.problems) == 1
    assert refused.value.problems[0].startswith(problem)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"days": 0}, "retention_days: must be a whole number of days, at least 1"),
        ({"days": True}, "retention_days: must be a whole number of days, at least 1"),
        ({"undelivered_limit_bytes": 0}, "undelivered_limit_mb: must be at least 1"),
        ({"interval_seconds": 0.0}, "interval_seconds: must be greater than 0"),
    ],
)
def test_a_policy_built_in_code_refuses_bad_values_naming_them(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        RetentionPolicy(**fields)  # type: ignore[arg-type]
