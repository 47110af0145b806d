"""Connection faults say what they are: origin and kind, at start, while they last, at the end."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator

import pytest

from telehealth_client.pubsub.bus import BusError, ConnectionStatus
from telehealth_client.service_status import ServiceStatus
from telehealth_devstack.relay import Relay
from tests.support.bus import BusFactory, Inbox, StatusLog, subscribed
from tests.support.logs import LogLines, attached

CHANNEL = "consultation.dr-smith.patient-abc123"
TOKEN = "TOKEN-MARKER-p0Tq"


@pytest.fixture
def watch() -> Iterator[LogLines]:
    with attached(LogLines(), "telehealth_client.pubsub") as handler:
        yield handler


def failures_at_least(count: int) -> Callable[[str], bool]:
    def matches(line: str) -> bool:
        found = re.match(r"bus subscribe failed failures=(\d+)", line)
        return found is not None and int(found.group(1)) >= count

    return matches


async def test_a_stopped_relay_is_connection_refused_once_then_its_end_with_a_duration(
    make_bus: BusFactory, relay: Relay, watch: LogLines
) -> None:
    kiosk = make_bus("patient-abc123", token=TOKEN, reconnect_min_seconds=0.01, reconnect_max_seconds=0.05)
    statuses = await subscribed(kiosk, CHANNEL, Inbox())
    await relay.stop()
    mark = len(statuses.changes)
    await watch.wait_for(failures_at_least(6))
    refused = [line for line in watch.faults() if "error=connection refused" in line]
    assert refused == [f"bus connection fault started origin={relay.origin} error=connection refused"]
    await relay.start()
    await statuses.wait_for(ConnectionStatus.CONNECTED, after=mark)
    ended = await watch.wait_for(lambda line: line.startswith("bus connection fault ended"))
    assert re.fullmatch(
        rf"bus connection fault ended origin={relay.origin} error=connection refused"
        r" after_seconds=\d+\.\d failures=\d+",
        ended,
    )
    assert not any(TOKEN in line for line in watch.lines)


async def test_an_http_error_status_is_named(make_bus: BusFactory, relay: Relay, watch: LogLines) -> None:
    kiosk = make_bus("patient-abc123")
    statuses = await subscribed(kiosk, CHANNEL, Inbox())
    await asyncio.wait_for(relay.wait_for_subscribers(1), 10)
    mark = len(statuses.changes)
    relay.fail_next(5, status=502)
    relay.drop_subscribers()
    await watch.wait_for(lambda line: "fault started" in line)
    assert watch.faults()[0] == f"bus connection fault started origin={relay.origin} error=HTTP 502"
    await statuses.wait_for(ConnectionStatus.CONNECTED, after=mark + 1)  # after the RECONNECTING


async def test_a_name_that_does_not_resolve_is_a_dns_failure_all_the_way_to_the_status(
    make_bus: BusFactory, watch: LogLines
) -> None:
    bus = make_bus("patient-abc123", origin="nonexistent.invalid")
    statuses = StatusLog(bus)
    service = ServiceStatus("nonexistent.invalid")
    bus.add_retry_listener(service.bus_attempt)
    await bus.subscribe([CHANNEL], Inbox())
    line = await watch.wait_for(lambda line: "fault started" in line)
    said = "DNS lookup failed for nonexistent.invalid"
    assert line == f"bus connection fault started origin=nonexistent.invalid error={said}"
    # The cause, not "network or server error": in the status, STATUS= and a request's error.
    change = await statuses.wait_for(ConnectionStatus.RECONNECTING)
    assert change.reason == said
    (awaited,) = service.awaited()
    assert awaited.startswith(f"waiting for PubNub origin nonexistent.invalid ({said}; attempt ")
    with pytest.raises(BusError) as failed:
        await bus.publish(CHANNEL, {"n": 1})
    assert (str(failed.value), failed.value.retryable) == (f"publish: {said}", True)


async def test_an_answer_too_slow_is_a_timeout(make_bus: BusFactory, relay: Relay, watch: LogLines) -> None:
    relay.set_delay(3.0)
    try:
        bus = make_bus("patient-abc123", subscribe_timeout_seconds=1.0)
        statuses = StatusLog(bus)
        await bus.subscribe([CHANNEL], Inbox())
        line = await watch.wait_for(lambda line: "fault started" in line)
        assert line == f"bus connection fault started origin={relay.origin} error=timeout"
        assert statuses.statuses()[-1] == ConnectionStatus.RECONNECTING
    finally:
        relay.set_delay(0)
