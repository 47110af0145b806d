"""The reconnection back-off as a pure function: exponential from the minimum, capped, jittered."""

from __future__ import annotations

import pytest

from telehealth_client.backoff import back_off_delay


def highest(low: float, high: float) -> float:
    return high


def lowest(low: float, high: float) -> float:
    return low


def test_the_ceiling_doubles_from_the_minimum() -> None:
    assert [back_off_delay(n, 0.5, 30.0, highest) for n in range(1, 8)] == [0.5, 1, 2, 4, 8, 16, 30]


@pytest.mark.parametrize("failures", [7, 8, 17, 100, 10_000])
def test_the_ceiling_is_capped_at_the_maximum(failures: int) -> None:
    assert back_off_delay(failures, 0.5, 30.0, highest) == 30.0


def test_the_jitter_draws_between_the_minimum_and_the_ceiling() -> None:
    drawn: list[tuple[float, float]] = []

    def record(low: float, high: float) -> float:
        drawn.append((low, high))
        return (low + high) / 2

    assert back_off_delay(3, 0.5, 30.0, record) == 1.25
    assert drawn == [(0.5, 2.0)]
    assert back_off_delay(1, 0.5, 30.0, lowest) == 0.5


def test_real_draws_stay_within_bounds() -> None:
    for failures in range(1, 40):
        assert 0.5 <= back_off_delay(failures, 0.5, 30.0) <= 30.0
