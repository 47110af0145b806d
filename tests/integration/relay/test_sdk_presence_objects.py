"""The real SDK against the relay: presence events and here_now, UUID metadata (App Context)."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from pubnub.exceptions import PubNubException

from telehealth_devstack.relay import ManualClock, Relay
from tests.support.relay import WAIT, ClientFactory, subscribed

CHANNEL = "presence.providers.cardiology"


async def test_join_here_now_and_leave(make_client: ClientFactory) -> None:
    watcher = make_client("watcher")
    alice = make_client("alice", presence_heartbeat=True)  # without it SDK 10.8 never sends a leave
    events = await subscribed(watcher, [CHANNEL], with_presence=True)
    own = await events.next_presence("join", "watcher")
    assert own.occupancy == 1

    await subscribed(alice, [CHANNEL])
    joined = await events.next_presence("join", "alice")
    assert (joined.channel, joined.occupancy) == (CHANNEL, 2)

    here = await watcher.here_now().channels([CHANNEL]).future()
    (channel,) = here.result.channels
    assert channel.channel_name == CHANNEL
    assert sorted(o.uuid for o in channel.occupants) == ["alice", "watcher"]

    alice.unsubscribe().channels([CHANNEL]).execute()
    left = await events.next_presence("leave", "alice")
    assert left.occupancy == 1


async def test_a_lapsed_heartbeat_times_out(
    make_client: ClientFactory, relay: Relay, relay_clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    watcher = make_client("watcher")
    events = await subscribed(watcher, [CHANNEL], with_presence=True)
    url = f"{relay.url}/v2/presence/sub-key/{relay.subscribe_key}/channel/{CHANNEL}/heartbeat"
    async with http.get(url, params={"uuid": "carol", "heartbeat": "60"}) as answer:
        assert answer.status == 200
    await events.next_presence("join", "carol")

    relay_clock.advance(59)
    relay.expire_presence()
    assert "carol" in relay.occupants(CHANNEL)
    relay_clock.advance(2)
    relay.expire_presence()

    timed_out = await events.next_presence("timeout", "carol")
    assert timed_out.channel == CHANNEL
    assert "carol" not in relay.occupants(CHANNEL)


async def test_a_resubscribe_within_the_timeout_is_no_new_join(
    relay: Relay, http: aiohttp.ClientSession
) -> None:
    url = f"{relay.url}/v2/subscribe/{relay.subscribe_key}/{CHANNEL}/0"
    for _ in range(2):
        async with http.get(url, params={"uuid": "dave", "tt": "0"}) as answer:
            assert answer.status == 200

    actions = [m.payload["action"] for m in relay.recent_messages(f"{CHANNEL}-pnpres")]
    assert actions == ["join"]


async def test_uuid_metadata_set_and_get(make_client: ClientFactory) -> None:
    clinic = make_client("clinic")
    consent = json.dumps({"granted": True, "expiresAt": None})

    await clinic.set_uuid_metadata(uuid="pat1", custom={"consent_telehealth": consent}, name="P1").future()

    with_custom = await clinic.get_uuid_metadata(uuid="pat1", include_custom=True).future()
    assert with_custom.result.data["id"] == "pat1"
    assert with_custom.result.data["name"] == "P1"
    assert json.loads(with_custom.result.data["custom"]["consent_telehealth"]) == {
        "granted": True,
        "expiresAt": None,
    }
    plain = await clinic.get_uuid_metadata(uuid="pat1").future()
    assert "custom" not in plain.result.data


async def test_uuid_metadata_of_an_unknown_user_is_404(make_client: ClientFactory) -> None:
    # SDK 10.8: future() does not raise, it returns an envelope whose status is the error.
    answer = await make_client("clinic").get_uuid_metadata(uuid="nobody").future()
    assert answer.status.is_error()
    assert answer.status.status_code == 404


async def test_uuid_metadata_rejects_nested_custom_values(make_client: ClientFactory, relay: Relay) -> None:
    clinic = make_client("clinic")
    with pytest.raises(PubNubException) as raised:
        await clinic.set_uuid_metadata(uuid="pat2", custom={"nested": {"a": 1}}).result()
    assert raised.value.status.status_code == 400
    assert "pat2" not in relay.dump_text()


async def test_a_metadata_change_is_announced_as_an_app_context_event(
    make_client: ClientFactory, relay: Relay, http: aiohttp.ClientSession
) -> None:
    url = f"{relay.url}/v2/subscribe/{relay.subscribe_key}/pat3/0"
    async with http.get(url, params={"uuid": "pat3", "tt": "0"}) as answer:
        since = (await answer.json())["t"]["t"]
    poll = asyncio.ensure_future(http.get(url, params={"uuid": "pat3", "tt": since}))
    await asyncio.wait_for(relay.wait_for_subscribers(1), WAIT)

    await make_client("clinic").set_uuid_metadata(uuid="pat3", name="P3").future()

    async with await asyncio.wait_for(poll, WAIT) as answer:
        (event,) = (await answer.json())["m"]
    assert event["e"] == 2
    assert (event["d"]["type"], event["d"]["event"], event["d"]["data"]["id"]) == ("uuid", "set", "pat3")


async def test_an_abandoned_long_poll_is_no_longer_pending_and_its_user_times_out(
    relay: Relay, relay_clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    """A kiosk that crashes mid long-poll: its connection closes, nothing else is ever sent."""
    async with http.get(f"{relay.url}/time/0") as answer:
        since = (await answer.json())[0]
    reader, writer = await asyncio.open_connection(relay.host, relay.port)
    target = f"/v2/subscribe/{relay.subscribe_key}/{CHANNEL}/0?uuid=ghost&heartbeat=60&tt={since}"
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {relay.origin}\r\n\r\n".encode())
    await writer.drain()
    await asyncio.wait_for(relay.wait_for_subscribers(1), WAIT)
    assert relay.occupants(CHANNEL) == ["ghost"]

    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(relay.wait_for_subscribers_at_most(0), WAIT)
    assert relay.pending_subscribers() == 0

    # Its presence now lapses like any other: the usual timeout, counted from the poll's end.
    relay_clock.advance(59)
    relay.expire_presence()
    assert relay.occupants(CHANNEL) == ["ghost"]
    relay_clock.advance(2)
    relay.expire_presence()
    assert relay.occupants(CHANNEL) == []
    actions = [m.payload["action"] for m in relay.recent_messages(f"{CHANNEL}-pnpres")]
    assert actions == ["join", "timeout"]
    assert await reader.read() == b""


async def test_a_client_that_unsubscribes_or_stops_leaves_no_long_poll_behind(
    make_client: ClientFactory, relay: Relay, relay_clock: ManualClock
) -> None:
    """The real SDK abandons its long-poll on a channel change and on stop(), sending nothing."""
    watcher = make_client("watcher")
    events = await subscribed(watcher, [CHANNEL], with_presence=True)
    await events.next_presence("join", "watcher")
    kiosk = make_client("kiosk", presence_timeout=60)  # no presence_heartbeat: no leave is sent
    await subscribed(kiosk, [CHANNEL])
    await events.next_presence("join", "kiosk")
    await asyncio.wait_for(relay.wait_for_subscribers(2), WAIT)

    kiosk.unsubscribe().channels([CHANNEL]).execute()
    await asyncio.wait_for(relay.wait_for_subscribers_at_most(1), WAIT)
    # The kiosk's abandoned poll no longer holds its presence: it times out for the watcher.
    relay_clock.advance(61)
    relay.expire_presence()
    timed_out = await events.next_presence("timeout", "kiosk")
    assert timed_out.channel == CHANNEL
    assert relay.occupants(CHANNEL) == ["watcher"]

    await watcher.stop()
    await asyncio.wait_for(relay.wait_for_subscribers_at_most(0), WAIT)
