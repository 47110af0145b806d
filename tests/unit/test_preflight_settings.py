"""The preflight thresholds in the settings: documented defaults, and bad values refused by name."""

from __future__ import annotations

import pytest

from telehealth_client.config import ConfigError, load_settings
from telehealth_client.preflight import Thresholds


def test_defaults_are_the_documented_thresholds() -> None:
    settings = load_settings(environ={})
    assert Thresholds.from_settings(settings) == Thresholds(30.0, 1.0, 5.0, 300.0)
    assert settings.preflight_media_seconds == 4.0


def test_thresholds_come_from_the_environment() -> None:
    settings = load_settings(
        environ={
            "TELEHEALTH_PREFLIGHT_GOOD_JITTER_MS": "20",
            "TELEHEALTH_PREFLIGHT_GOOD_LOSS_PERCENT": "0.5",
            "TELEHEALTH_PREFLIGHT_POOR_LOSS_PERCENT": "3",
            "TELEHEALTH_PREFLIGHT_POOR_RTT_MS": "250",
            "TELEHEALTH_PREFLIGHT_MEDIA_SECONDS": "2",
        }
    )
    assert Thresholds.from_settings(settings) == Thresholds(20.0, 0.5, 3.0, 250.0)
    assert settings.preflight_media_seconds == 2.0


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("PREFLIGHT_GOOD_JITTER_MS", "0", "greater than 0"),
        ("PREFLIGHT_GOOD_JITTER_MS", "nan", "less than or equal to 1000"),
        ("PREFLIGHT_GOOD_LOSS_PERCENT", "101", "less than or equal to 100"),
        ("PREFLIGHT_POOR_LOSS_PERCENT", "-1", "greater than 0"),
        ("PREFLIGHT_POOR_RTT_MS", "fast", "valid number"),
        ("PREFLIGHT_MEDIA_SECONDS", "60", "less than or equal to 30"),
    ],
)
def test_a_bad_threshold_is_refused_naming_it(name: str, value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(environ={f"TELEHEALTH_{name}": value})
    [problem] = refused.value.problems
    assert problem.startswith(f"{name.lower()} (TELEHEALTH_{name}): ")
    assert reason in problem


def test_poor_loss_below_good_loss_is_refused() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(
            environ={
                "TELEHEALTH_PREFLIGHT_GOOD_LOSS_PERCENT": "4",
                "TELEHEALTH_PREFLIGHT_POOR_LOSS_PERCENT": "2",
            }
        )
    assert refused.value.problems == [
        "settings: preflight_poor_loss_percent must not be below preflight_good_loss_percent"
    ]
