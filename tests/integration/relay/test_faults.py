"""Fault injection: dropped long-polls, injected failures, stalls, delays, restarts, odd events."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from telehealth_devstack.relay import FILE_EVENT, OBJECTS_EVENT, Relay
from tests.support.relay import WAIT, ClientFactory, raw_get, subscribed

CHANNEL = "consultation.prov1.pat1"


async def now(relay: Relay, http: aiohttp.ClientSession) -> str:
    async with http.get(f"{relay.url}/time/0") as answer:
        return str((await answer.json())[0])


def poll(relay: Relay, since: str, channels: str = CHANNEL) -> asyncio.Task[Any]:
    """A raw long-poll from ``since`` on its own connection, answered with the decoded JSON body."""

    async def run() -> Any:
        target = f"/v2/subscribe/{relay.subscribe_key}/{channels}/0?uuid=poller&tt={since}"
        status, body = await raw_get(relay, target)
        assert status == 200
        return body

    return asyncio.ensure_future(run())


async def test_drop_subscribers_cuts_pending_long_polls(
    relay: Relay, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    since = await now(relay, http)
    first, second = poll(relay, since), poll(relay, since, "elsewhere")
    await asyncio.wait_for(relay.wait_for_subscribers(2), WAIT)

    assert relay.drop_subscribers() == 2

    for task in (first, second):
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(task, WAIT)
    assert relay.pending_subscribers() == 0
    # The relay still serves: a new poll from the same timetoken gets the next message.
    again = poll(relay, since)
    await asyncio.wait_for(relay.wait_for_subscribers(1), WAIT)
    relay.inject_event(CHANNEL, 0, {"after": "drop"})
    answer = await asyncio.wait_for(again, WAIT)
    assert [m["d"] for m in answer["m"]] == [{"after": "drop"}]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "a drop is not a server error"


async def test_fail_next_answers_with_5xx_and_changes_nothing(
    make_client: ClientFactory, relay: Relay, http: aiohttp.ClientSession
) -> None:
    alice = make_client("alice")
    relay.fail_next(2, status=503)

    for attempt in range(2):
        failed = await alice.publish().channel(CHANNEL).message(attempt).future()
        assert failed.status.is_error()
        assert failed.status.status_code == 503
    assert relay.stored_messages(CHANNEL) == []
    assert not (await alice.publish().channel(CHANNEL).message("third").future()).status.is_error()
    assert [m.payload for m in relay.stored_messages(CHANNEL)] == ["third"]

    relay.fail_next(1, status=500)
    async with http.get(f"{relay.url}/time/0") as answer:
        assert answer.status == 500
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        assert (await answer.json())["error"] is True


async def test_stall_holds_requests_and_answers_until_resume(
    make_client: ClientFactory, relay: Relay, http: aiohttp.ClientSession
) -> None:
    alice = make_client("alice")
    since = await now(relay, http)
    pending = poll(relay, since)
    await asyncio.wait_for(relay.wait_for_subscribers(1), WAIT)

    relay.stall()
    publish = asyncio.ensure_future(alice.publish().channel(CHANNEL).message("held").future())
    relay.inject_event(CHANNEL, 0, "injected while stalled")
    # Nothing may come back while stalled: a short bounded wait that must time out.
    done, _ = await asyncio.wait({publish, pending}, timeout=0.3)
    assert not done
    assert [m.payload for m in relay.stored_messages(CHANNEL)] == []

    relay.resume()

    assert not (await asyncio.wait_for(publish, WAIT)).status.is_error()
    assert [m["d"] for m in (await asyncio.wait_for(pending, WAIT))["m"]] == ["injected while stalled"]
    assert [m.payload for m in relay.stored_messages(CHANNEL)] == ["held"]


async def test_set_delay_slows_every_answer(make_client: ClientFactory, relay: Relay) -> None:
    alice = make_client("alice")
    loop = asyncio.get_running_loop()
    relay.set_delay(1.0)
    started = loop.time()
    await alice.time().result()
    assert loop.time() - started >= 1.0

    # Cleared, the same request is back to a loopback round trip: far below the delay,
    # with a margin wide enough for a busy machine.
    relay.set_delay(0)
    started = loop.time()
    await alice.time().result()
    assert loop.time() - started < 0.75


async def test_stop_and_start_on_the_same_port_keeps_what_was_stored(
    make_client: ClientFactory, relay: Relay, http: aiohttp.ClientSession
) -> None:
    alice = make_client("alice")
    bob = make_client("bob")
    await alice.publish().channel(CHANNEL).message("before").future()
    port = relay.port
    since = await now(relay, http)
    cut = poll(relay, since)
    await asyncio.wait_for(relay.wait_for_subscribers(1), WAIT)

    await relay.stop()

    with pytest.raises(ConnectionError):
        await asyncio.wait_for(cut, WAIT)
    assert (await alice.publish().channel(CHANNEL).message("while down").future()).status.is_error()

    await relay.start()

    assert relay.port == port
    inbox = await subscribed(bob, [CHANNEL])
    await alice.publish().channel(CHANNEL).message("after").future()
    assert (await asyncio.wait_for(inbox.messages.get(), WAIT)).message == "after"
    fetched = await alice.fetch_messages().channels([CHANNEL]).result()
    assert [m.message for m in fetched.channels[CHANNEL]] == ["before", "after"]
    # A subscriber resuming from its last timetoken gets what it missed, across the restart.
    resumed = await asyncio.wait_for(poll(relay, since), WAIT)
    assert [m["d"] for m in resumed["m"]] == ["after"]


@pytest.mark.parametrize("message_type", [OBJECTS_EVENT, FILE_EVENT])
async def test_injected_events_reach_a_subscribe_answer(
    relay: Relay, http: aiohttp.ClientSession, message_type: int
) -> None:
    since = await now(relay, http)
    pending = poll(relay, since)
    await asyncio.wait_for(relay.wait_for_subscribers(1), WAIT)

    timetoken = relay.inject_event(CHANNEL, message_type, None, publisher="clinic")

    (event,) = (await asyncio.wait_for(pending, WAIT))["m"]
    assert event["e"] == message_type
    assert (event["c"], event["i"], event["k"], event["f"]) == (CHANNEL, "clinic", relay.subscribe_key, 0)
    assert event["p"] == {"t": str(timetoken), "r": 1}
    if message_type == OBJECTS_EVENT:
        assert (event["d"]["source"], event["d"]["type"], event["d"]["event"]) == ("objects", "uuid", "set")
    else:
        assert set(event["d"]["file"]) == {"id", "name"}
