"""The outbox's wait before a failed publish is tried again: the back-off, unless the failure asked
for longer (a proxy refusing proxy_authorization: each attempt would send the password again)."""

from __future__ import annotations

from telehealth_client.durable.outbox import retry_delay
from telehealth_client.outbound import PROXY_REFUSED_RETRY_SECONDS

BACKOFF = (0.5, 5.0)


def test_a_plain_failure_waits_the_back_off() -> None:
    for failures in range(1, 12):
        assert 0.5 <= retry_delay(failures, BACKOFF, None) <= 5.0


def test_a_failure_that_asks_for_a_minute_is_not_tried_sooner() -> None:
    for failures in range(1, 12):
        assert retry_delay(failures, BACKOFF, PROXY_REFUSED_RETRY_SECONDS) == PROXY_REFUSED_RETRY_SECONDS
    assert PROXY_REFUSED_RETRY_SECONDS >= 60


def test_a_short_ask_does_not_shorten_the_back_off() -> None:
    assert retry_delay(8, (5.0, 5.0), 1.0) == 5.0
