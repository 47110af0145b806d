"""Channels side by side, one item in flight per channel: the outbox on the real relay and SDK
behind a slow link (the relay delays every request), with a hop that counts publishes in flight."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from telehealth_client.durable.at_rest import Sealer
from telehealth_client.durable.outbox import Outbox, Outgoing
from telehealth_client.pubsub.bus import ConnectionStatus, Envelope
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.relay import Relay
from tests.integration.outbox.in_flight import InFlightTap
from tests.support.bus import CIPHER_KEY, BusFactory, Inbox, StatusLog
from tests.support.logs import LogLines
from tests.support.outbox import SENDER, WAIT, OutboxFactory, Results, chat, sending

DELAY = 0.2  # seconds the relay holds every request: long enough for publishes to overlap
CONSULTATIONS = [f"consultation.dr-lee.pat-{n}" for n in range(1, 5)]
EMERGENCY = "emergency.dept-1"
NOTIFICATION = "notification.dr-kim"
CHANNELS = [*CONSULTATIONS, EMERGENCY, NOTIFICATION]
SENTINEL = "sentinel"


def item_for(channel: str, n: int) -> Outgoing:
    """A chat on a consultation, an escalation-like item on the emergency channel, a notification."""
    if channel in CONSULTATIONS:
        return chat(f"item {n}", channel, channel)
    item_id = str(uuid.uuid4())
    kind = "emergency" if channel == EMERGENCY else "notification"
    return Outgoing(item_id, "", channel, {"id": item_id, "type": kind, "n": n}, kind=kind)


def interleaved(channels: list[str], per_channel: int) -> list[Outgoing]:
    """Items put as an agent with several consultations would: the channels taking turns."""
    return [item_for(channel, n) for n in range(per_channel) for channel in channels]


async def watching(make_bus: BusFactory, channels: list[str]) -> tuple[PubNubBus, Inbox]:
    watcher, inbox = make_bus("dr-lee"), Inbox()
    statuses = StatusLog(watcher)
    await watcher.subscribe(channels, inbox)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    return watcher, inbox


async def shown(watcher: PubNubBus, inbox: Inbox, channels: list[str], expected: int) -> list[Envelope]:
    """Every envelope shown once a sentinel published on each channel after the drain has arrived:
    each channel is ordered, so a second copy of anything would have arrived before its sentinel."""
    for channel in channels:
        await watcher.publish(channel, {"type": SENTINEL})
    received = await inbox.wait_for(expected + len(channels), within=WAIT)
    sentinels = [e for e in received if e.message.get("type") == SENTINEL]
    assert sorted(e.channel for e in sentinels) == sorted(channels)
    return [e for e in received if e.message.get("type") != SENTINEL]


def in_timetoken_order(envelopes: list[Envelope]) -> dict[str, list[str]]:
    """Each channel's ids as a receiver orders them: by timetoken."""
    order: dict[str, list[str]] = defaultdict(list)
    for envelope in sorted(envelopes, key=lambda e: e.timetoken):
        order[envelope.channel].append(envelope.message["id"])
    return dict(order)


def in_put_order(items: list[Outgoing]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = defaultdict(list)
    for item in items:
        order[item.channel].append(item.id)
    return dict(order)


def assert_once_in_order(received: list[Envelope], items: list[Outgoing], results: Results) -> None:
    ids = [e.message["id"] for e in received]
    assert len(ids) == len(set(ids)) == len(items), "every item shown exactly once"
    assert all(e.publisher == SENDER for e in received)
    assert in_timetoken_order(received) == in_put_order(items)
    timetokens = {e.message["id"]: e.timetoken for e in received}
    assert sorted((item.id, tt) for item, tt in results.sent) == sorted(timetokens.items())
    assert results.failed == []


async def test_channels_are_in_flight_at_once_one_item_each_and_every_channel_keeps_its_order(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory
) -> None:
    watcher, inbox = await watching(make_bus, CHANNELS)
    items = interleaved(CHANNELS, per_channel=4)
    async with InFlightTap(relay) as tap:
        relay.set_delay(DELAY)
        outbox, results = await sending(make_outbox, make_bus(SENDER, origin=tap.origin), *items)
        assert await outbox.wait_drained(WAIT)
    assert tap.most_per_channel == dict.fromkeys(CHANNELS, 1), "two items of one channel in flight"
    assert tap.most_at_once == len(CHANNELS)
    assert tap.publishes == dict.fromkeys(CHANNELS, 4)
    assert_once_in_order(await shown(watcher, inbox, CHANNELS, len(items)), items, results)


async def test_max_in_flight_bounds_the_publishes_in_flight_over_all_channels(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory
) -> None:
    watcher, inbox = await watching(make_bus, CONSULTATIONS)
    items = interleaved(CONSULTATIONS, per_channel=3)
    results = Results()
    async with InFlightTap(relay) as tap:
        relay.set_delay(DELAY)
        outbox = make_outbox(results, max_in_flight=2)
        await outbox.open()
        outbox.attach(make_bus(SENDER, origin=tap.origin))
        for item in items:
            await outbox.put(item)
        assert await outbox.wait_drained(WAIT)
    assert tap.most_at_once == 2
    assert max(tap.most_per_channel.values()) == 1
    assert_once_in_order(await shown(watcher, inbox, CONSULTATIONS, len(items)), items, results)


async def test_answers_lost_on_several_channels_at_once_are_settled_in_history_and_not_sent_again(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory, log_lines: LogLines
) -> None:
    watcher, inbox = await watching(make_bus, CHANNELS)
    items = interleaved(CHANNELS, per_channel=3)
    async with InFlightTap(relay) as tap:
        relay.set_delay(DELAY)
        # The first publish of every channel reaches the relay, which stores it; its answer is lost.
        tap.lose_next_publish_answers(len(CHANNELS), mode="drop")
        bus = make_bus(SENDER, origin=tap.origin)
        outbox, results = await sending(
            make_outbox, bus, *items, backoff_min_seconds=0.05, backoff_max_seconds=0.2
        )
        assert await outbox.wait_drained(WAIT)
    assert tap.lost == len(CHANNELS)
    assert tap.most_per_channel == dict.fromkeys(CHANNELS, 1)
    assert tap.publishes == dict.fromkeys(CHANNELS, 3), "a landed item was published again"
    assert log_lines.lines.count("outbox history check items=1 found=1 pages=1") == len(CHANNELS)
    assert_once_in_order(await shown(watcher, inbox, CHANNELS, len(items)), items, results)


async def test_a_link_cut_with_several_channels_in_flight_delivers_every_item_once_in_order(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory, log_lines: LogLines
) -> None:
    watcher, inbox = await watching(make_bus, CHANNELS)
    items = interleaved(CHANNELS, per_channel=3)
    async with InFlightTap(relay) as tap, CuttableLink(tap.origin) as link:
        relay.set_delay(DELAY)
        bus = make_bus(SENDER, origin=link.origin)
        outbox, results = await sending(
            make_outbox, bus, *items, backoff_min_seconds=0.05, backoff_max_seconds=0.2
        )
        await asyncio.wait_for(tap.wait_in_flight(len(CHANNELS)), WAIT)
        link.cut()  # every channel's first publish is on its way: whether it lands is unknown
        for item in items[: len(CHANNELS)]:
            await log_lines.wait_line("outbox publish failed", item.id)
        link.restore()
        assert await outbox.wait_drained(WAIT)
    assert tap.most_per_channel == dict.fromkeys(CHANNELS, 1)
    # Each lane read its channel's history before publishing its unsure item again.
    checks = [line for line in log_lines.lines if line.startswith("outbox history check items=1 ")]
    assert len(checks) >= len(CHANNELS)
    assert_once_in_order(await shown(watcher, inbox, CHANNELS, len(items)), items, results)


async def test_after_a_restart_each_channel_settles_its_items_in_history_and_sends_the_rest_once_in_order(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory, log_lines: LogLines
) -> None:
    channels = CONSULTATIONS[:3]
    watcher, inbox = await watching(make_bus, channels)
    items = interleaved(channels, per_channel=3)
    first = make_outbox()
    await first.open()
    for item in items:
        await first.put(item)
    # The process that died had published the first two items of one channel, the first of
    # another and none of the third, and deleted none of them.
    sender = make_bus(SENDER)
    published_before = [*in_put_order(items)[channels[0]][:2], in_put_order(items)[channels[1]][0]]
    by_id = {item.id: item for item in items}
    for item_id in published_before:
        await sender.publish(by_id[item_id].channel, by_id[item_id].message)
    await first.aclose()

    results = Results()
    async with InFlightTap(relay) as tap:
        relay.set_delay(DELAY)
        restarted = make_outbox(results)
        assert await restarted.open() == items  # the order on disk is the order they were put
        restarted.attach(make_bus(SENDER, origin=tap.origin))
        assert await restarted.wait_drained(WAIT)
    assert tap.publishes == {channels[0]: 1, channels[1]: 2, channels[2]: 3}
    assert max(tap.most_per_channel.values()) == 1
    for found in (2, 1, 0):
        assert f"outbox history check items=3 found={found} pages=1" in log_lines.lines
    assert_once_in_order(await shown(watcher, inbox, channels, len(items)), items, results)


@pytest.mark.parametrize("limit", [0, -1, True, 1.5])
def test_max_in_flight_must_be_a_whole_number_of_at_least_one(tmp_path: Path, limit: object) -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        Outbox(tmp_path / "outbox.sqlite3", Sealer(CIPHER_KEY, purpose="outbox"), max_in_flight=limit)  # type: ignore[arg-type]
