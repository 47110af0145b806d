"""Reconnection in about a second: the kiosk's own network drops while the relay and the provider go on.

The fast counterpart of test_bus.py's 10 s relay outage (left out of the mutation run): a Switch cuts
only the kiosk's connections, so what the provider publishes meanwhile is certainly published while
the kiosk is away, and can only reach it through the catch-up from its cursor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from telehealth_client.pubsub.bus import ConnectionStatus, StatusChange
from telehealth_devstack.relay import Relay
from telehealth_devstack.relay.pubsub import REGION
from tests.support.bus import BusFactory, Inbox, StatusLog, subscribed

from .switch import Switch

CHANNEL = "consultation.dr-smith.patient-abc123"


@pytest.fixture
async def switch(relay: Relay) -> AsyncIterator[Switch]:
    # Requested before make_bus: the buses are closed before the switch goes away.
    async with Switch(relay) as running:
        yield running


async def test_a_dropped_network_catches_up_from_the_cursor_exactly_once(
    switch: Switch, make_bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="telehealth_client.pubsub.pubnub_bus")
    kiosk = make_bus(
        "patient-abc123", origin=switch.origin, reconnect_min_seconds=0.05, reconnect_max_seconds=0.2
    )
    provider = make_bus("dr-smith")
    inbox = Inbox()
    statuses = await subscribed(kiosk, CHANNEL, inbox)
    connected = statuses.changes[-1]
    assert (connected.failures, connected.caught_up_from) == (0, None)  # a first connection resumes nothing
    await provider.publish(CHANNEL, {"n": 0})
    await inbox.wait_for(1)
    cursor = kiosk.timetoken
    assert cursor != 0

    switch.unplug()
    outage = await statuses.wait_for(ConnectionStatus.RECONNECTING)
    assert (outage.failures, outage.reason) == (1, "connection closed by the server")  # the cause, named
    for n in range(1, 6):
        await provider.publish(CHANNEL, {"n": n})
    refused = switch.refused
    await asyncio.wait_for(switch.wait_for_refused(refused + 1), 5)  # it tried again, and still away
    assert kiosk.status == ConnectionStatus.RECONNECTING
    assert len(inbox.items) == 1
    assert kiosk.timetoken == cursor  # the cursor waits for the catch-up

    mark, polls = len(statuses.changes), len(switch.subscribe_queries)
    heartbeats = switch.heartbeats
    switch.plug()
    back = await statuses.wait_for(ConnectionStatus.CONNECTED, within=5, after=mark)
    assert (back.failures, back.caught_up_from) == (0, cursor)
    await asyncio.wait_for(switch.wait_for_heartbeats(heartbeats + 1), 5)  # present again at once
    for n in range(6, 11):
        await provider.publish(CHANNEL, {"n": n})
    received = await inbox.wait_for(11)
    assert [env.message["n"] for env in received] == list(range(11))
    assert statuses.statuses()[-2:] == [ConnectionStatus.RECONNECTING, ConnectionStatus.CONNECTED]
    assert statuses.statuses().count(ConnectionStatus.CONNECTED) == 2
    assert switch.heartbeats == heartbeats + 1  # one on reconnecting, the next not for a minute
    # Back, a handshake (tt=0, no region) first; then the long-poll from the cursor, in its region.
    handshake, resumed = switch.subscribe_queries[polls : polls + 2]
    assert (handshake["tt"], "tr" in handshake) == ("0", False)
    assert (resumed["tt"], resumed["tr"]) == (str(cursor), str(REGION))
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("bus status=")]
    assert said == [
        "bus status=connecting reason=None failures=0",
        "bus status=connected reason=None failures=0",
        "bus status=reconnecting reason=connection closed by the server failures=1",
        "bus status=connected reason=None failures=0",
    ]


async def test_an_answer_without_a_cursor_is_a_failed_poll_and_nothing_is_lost(
    switch: Switch, make_bus: BusFactory, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="telehealth_client.pubsub.pubnub_bus")
    kiosk = make_bus("patient-abc123", origin=switch.origin)
    provider = make_bus("dr-smith")
    inbox = Inbox()
    statuses = await subscribed(kiosk, CHANNEL, inbox)
    await asyncio.wait_for(relay.wait_for_subscribers(1), 5)  # the long-poll that n=1 answers
    switch.answer_next_poll(b'{"t": {"r": 1}, "m": []}')
    await provider.publish(CHANNEL, {"n": 1})  # answers the pending poll: the next one gets the bad answer
    await inbox.wait_for(1)
    cursor = kiosk.timetoken
    broken = await statuses.wait_for(ConnectionStatus.RECONNECTING)
    assert (broken.reason, broken.failures) == ("subscribe answer has no timetoken 't.t'", 1)
    assert kiosk.timetoken == cursor
    await provider.publish(CHANNEL, {"n": 2})
    back = await statuses.wait_for(ConnectionStatus.CONNECTED, after=statuses.changes.index(broken))
    assert back.caught_up_from == cursor
    received = await inbox.wait_for(2)
    assert [env.message["n"] for env in received] == [1, 2]
    assert "bus subscribe failed failures=1 error=malformed answer" in [
        r.getMessage() for r in caplog.records
    ]


async def test_a_status_listener_that_fails_is_logged_and_the_others_still_hear(
    make_bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    kiosk = make_bus("patient-abc123")

    def broken(change: object) -> None:
        raise RuntimeError("listener bug patient-abc123")

    kiosk.add_status_listener(broken)
    heard = StatusLog(kiosk)
    removed: list[StatusChange] = []
    stop_hearing = kiosk.add_status_listener(removed.append)
    stop_hearing()
    await kiosk.subscribe([CHANNEL], Inbox())
    await heard.wait_for(ConnectionStatus.CONNECTED)
    assert heard.statuses() == [ConnectionStatus.CONNECTING, ConnectionStatus.CONNECTED]
    assert removed == []
    failures = [r.getMessage() for r in caplog.records if "status listener failed" in r.getMessage()]
    assert len(failures) == 2
    assert all(m.startswith("bus status listener failed error=RuntimeError at ") for m in failures)
    assert "patient-abc123" not in " ".join(failures)
