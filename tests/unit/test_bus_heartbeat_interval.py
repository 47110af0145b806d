"""How often the bus says it is still present: twice per presence timeout, never more than every 5 s."""

from __future__ import annotations

import pytest

from telehealth_client.pubsub.pubnub_bus import heartbeat_interval


@pytest.mark.parametrize(
    ("timeout", "interval"), [(120, 59.0), (300, 149.0), (13, 5.5), (12, 5.0), (20, 9.0)]
)
def test_two_heartbeats_fit_in_the_presence_timeout_with_a_second_to_spare(
    timeout: int, interval: float
) -> None:
    assert heartbeat_interval(timeout) == interval


@pytest.mark.parametrize("timeout", [1, 5, 10, 11])
def test_a_short_timeout_is_not_answered_with_a_flood_of_heartbeats(timeout: int) -> None:
    assert heartbeat_interval(timeout) == 5.0
