"""The bus's own loops: a failed heartbeat is only logged, and a loop that is cancelled from outside
is reported as failed, a status that nothing but closing the bus replaces."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from telehealth_client.pubsub import pubnub_bus
from telehealth_client.pubsub.bus import ConnectionStatus
from telehealth_client.pubsub.wire import parse_subscribe_answer
from telehealth_devstack.relay import Relay
from tests.support.bus import BusFactory, Inbox, subscribed
from tests.support.logs import LogLines, attached

from .switch import Switch

CHANNEL = "consultation.dr-smith.patient-abc123"
LOGGER = "telehealth_client.pubsub.pubnub_bus"


@pytest.fixture
async def switch(relay: Relay) -> AsyncIterator[Switch]:
    # Requested before make_bus: the buses are closed before the switch goes away.
    async with Switch(relay) as running:
        yield running


@pytest.fixture
def bus_log() -> Iterator[LogLines]:
    with attached(LogLines(), LOGGER) as handler:
        yield handler


def bus_loop(name: str) -> asyncio.Task[object]:
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == name]
    return task


async def test_a_refused_heartbeat_is_logged_and_changes_nothing(
    switch: Switch, make_bus: BusFactory, bus_log: LogLines
) -> None:
    switch.refuse_heartbeats = True
    kiosk, provider = make_bus("patient-abc123", origin=switch.origin), make_bus("dr-smith")
    inbox = Inbox()
    await subscribed(kiosk, CHANNEL, inbox)  # connecting sends a heartbeat at once
    logged = await bus_log.wait_for(lambda line: line.startswith("heartbeat "), within=5)
    assert logged == "heartbeat failed error=HTTP 503"
    await provider.publish(CHANNEL, {"n": 1})
    await inbox.wait_for(1)
    assert kiosk.status == ConnectionStatus.CONNECTED


@pytest.mark.parametrize("loop", ["bus-heartbeat", "bus-dispatch", "bus-subscribe"])
async def test_a_loop_cancelled_from_outside_fails_the_bus_until_it_is_closed(
    switch: Switch, make_bus: BusFactory, caplog: pytest.LogCaptureFixture, loop: str
) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    kiosk = make_bus("patient-abc123", origin=switch.origin)
    statuses = await subscribed(kiosk, CHANNEL, Inbox())
    bus_loop(loop).cancel()
    failed = await statuses.wait_for(ConnectionStatus.FAILED)
    assert failed.reason == f"{loop} ended: cancelled"
    assert f"bus loop ended loop={loop} reason=cancelled" in [r.getMessage() for r in caplog.records]
    if loop != "bus-subscribe":
        switch.unplug()  # the subscribe loop goes on, but the outage it sees does not replace "failed"
        await asyncio.wait_for(switch.wait_for_refused(1), 5)
        assert kiosk.status == ConnectionStatus.FAILED
    await kiosk.aclose()
    assert statuses.statuses()[-2:] == [ConnectionStatus.FAILED, ConnectionStatus.STOPPED]


async def test_a_new_token_during_an_outage_is_not_a_new_status(
    switch: Switch, make_bus: BusFactory, bus_log: LogLines
) -> None:
    # Only a refusal of the new token is news (the token keeper waits for it); another failed
    # poll of the same outage is not.
    kiosk = make_bus("patient-abc123", origin=switch.origin, reconnect_min_seconds=60.0)
    statuses = await subscribed(kiosk, CHANNEL, Inbox())
    switch.unplug()
    await statuses.wait_for(ConnectionStatus.RECONNECTING)
    kiosk.set_token("p0F2AkF0")  # cuts the minute's back-off short: the bus polls again at once
    await bus_log.wait_for(lambda line: line.startswith("bus subscribe failed failures=2 "), within=5)
    assert statuses.statuses() == [
        ConnectionStatus.CONNECTING,
        ConnectionStatus.CONNECTED,
        ConnectionStatus.RECONNECTING,
    ]


async def test_a_bug_in_one_subscribe_step_is_logged_reported_and_retried(
    make_bus: BusFactory, bus_log: LogLines, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fault injection, as no real part can make the bus's own code fail: the answer parser raises
    # on its first call (the answer is the relay's own).
    calls: list[object] = []

    def buggy(raw: Any, decryptor: Any) -> Any:
        calls.append(raw)
        if len(calls) == 1:
            raise RuntimeError("bug while reading patient-abc123")
        return parse_subscribe_answer(raw, decryptor)

    monkeypatch.setattr(pubnub_bus, "parse_subscribe_answer", buggy)
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    inbox = Inbox()
    statuses = await subscribed(kiosk, CHANNEL, inbox)
    assert statuses.statuses() == [
        ConnectionStatus.CONNECTING,
        ConnectionStatus.RECONNECTING,
        ConnectionStatus.CONNECTED,
    ]
    bug = statuses.changes[1]
    assert (bug.reason, bug.failures) == ("internal error", 1)
    assert statuses.changes[2].failures == 0
    [line] = [line for line in bus_log.lines if line.startswith("bus subscribe step failed")]
    assert line.startswith("bus subscribe step failed error=RuntimeError at test_bus_loops.py:")
    await provider.publish(CHANNEL, {"n": 1})
    assert [env.message for env in await inbox.wait_for(1)] == [{"n": 1}]
