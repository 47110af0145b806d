"""The back-off's exponent stops growing after 16 doublings: no overflow however long the outage."""

from __future__ import annotations

from telehealth_client.backoff import back_off_delay


def highest(low: float, high: float) -> float:
    return high


def test_the_doubling_stops_at_2_to_the_16th_of_the_minimum() -> None:
    assert back_off_delay(17, 1.0, 1e9, highest) == 65536.0
    assert back_off_delay(10_000, 1.0, 1e9, highest) == 65536.0
    assert back_off_delay(16, 1.0, 1e9, highest) == 32768.0


def test_no_failures_yet_waits_the_minimum() -> None:
    assert back_off_delay(0, 0.5, 30.0, highest) == 0.5
