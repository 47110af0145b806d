"""The outbox on the real relay and SDK: in order, exactly once, through lost links and lost answers."""

from __future__ import annotations

from typing import Any

from telehealth_client.durable.outbox import Outgoing
from telehealth_client.pubsub.bus import ConnectionStatus, Envelope
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.relay import Relay
from tests.integration.outbox.lossy_answers import LossyAnswers
from tests.support.bus import BusFactory, Inbox, StatusLog, subscribed
from tests.support.logs import LogLines
from tests.support.outbox import (
    CHANNEL,
    SENDER,
    WAIT,
    OutboxFactory,
    Results,
    chat,
    everything_after,
    ids,
    sending,
)


async def test_items_put_while_the_link_is_cut_arrive_once_in_order_as_soon_as_it_returns(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory, log_lines: LogLines
) -> None:
    watcher, inbox = make_bus("dr-lee"), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    async with CuttableLink(relay.origin) as link:
        sender = make_bus(SENDER, origin=link.origin)
        statuses = await subscribed(sender, f"notification.{SENDER}", Inbox())
        results = Results()
        # A back-off far longer than the test waits: only the bus's `connected` can restart sending in time.
        outbox = make_outbox(results, backoff_min_seconds=60.0, backoff_max_seconds=60.0)
        await outbox.open()
        outbox.attach(sender)
        mark = len(statuses.changes)
        link.cut()
        await statuses.wait_for(ConnectionStatus.RECONNECTING, after=mark)
        items = [chat(f"while away {n}") for n in range(20)]
        for item in items:
            await outbox.put(item)
        await log_lines.wait_line("outbox publish failed", items[0].id)
        assert outbox.pending() == items
        assert results.sent == []

        link.restore()
        assert await outbox.wait_drained(WAIT)
        received = await everything_after(watcher, inbox, len(items))
    assert ids(received) == [item.id for item in items]
    assert all(envelope.publisher == SENDER for envelope in received)
    assert [(item, tt) for item, tt in results.sent] == [
        (item, envelope.timetoken) for item, envelope in zip(items, received, strict=True)
    ]
    # The failed attempt might have landed: one history read settled it before sending again.
    assert "outbox history check items=1 found=0 pages=1" in log_lines.lines


async def first_answer_lost(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory, mode: str, text: str, **sender: Any
) -> tuple[Results, Outgoing, Outgoing, list[Envelope]]:
    """Two items put, the answer to the first one's publish lost (``mode``: dropped, or held until
    the sender's request times out); once the outbox has drained: its results, the two items, and
    what a watcher received (the two items, each once, in order)."""
    watcher, inbox = make_bus("dr-lee"), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    async with LossyAnswers(relay) as lossy:
        bus = make_bus(SENDER, origin=lossy.origin, **sender)
        lossy.lose_next_publish_answers(1, mode=mode)
        landed, after = chat(text), chat("next")
        outbox, results = await sending(
            make_outbox, bus, landed, after, backoff_min_seconds=0.05, backoff_max_seconds=0.2
        )
        assert await outbox.wait_drained(WAIT)
        received = await everything_after(watcher, inbox, 2)
    assert lossy.lost == 1
    assert ids(received) == [landed.id, after.id]
    return results, landed, after, received


async def test_a_publish_whose_answer_was_lost_is_not_published_again(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory, log_lines: LogLines
) -> None:
    results, landed, after, received = await first_answer_lost(
        relay, make_bus, make_outbox, "drop", "answer lost"
    )
    assert results.sent == [(landed, received[0].timetoken), (after, received[1].timetoken)]
    assert "outbox history check items=1 found=1 pages=1" in log_lines.lines


async def test_a_publish_that_timed_out_but_landed_is_not_published_again(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory
) -> None:
    results, landed, after, _ = await first_answer_lost(
        relay, make_bus, make_outbox, "hold", "timed out", request_timeout_seconds=1.0
    )
    assert [item for item, _ in results.sent] == [landed, after]


async def test_items_found_on_disk_that_were_sent_before_a_crash_are_not_sent_again(
    make_bus: BusFactory, make_outbox: OutboxFactory, log_lines: LogLines
) -> None:
    watcher, inbox = make_bus("dr-lee"), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    first = make_outbox()
    await first.open()
    sent_before, never_sent = chat("published, then the process died"), chat("never published")
    await first.put(sent_before)
    await first.put(never_sent)
    # The crashed process had published the first item but not yet deleted it.
    sender = make_bus(SENDER)
    published = await sender.publish(CHANNEL, sent_before.message)
    await first.aclose()

    results = Results()
    restarted = make_outbox(results)
    assert await restarted.open() == [sent_before, never_sent]
    restarted.attach(sender)
    assert await restarted.wait_drained(WAIT)
    received = await everything_after(watcher, inbox, 2)
    assert ids(received) == [sent_before.id, never_sent.id]
    assert results.sent == [(sent_before, published.timetoken), (never_sent, received[1].timetoken)]
    assert "outbox history check items=2 found=1 pages=1" in log_lines.lines


async def test_another_users_copy_in_history_does_not_count_as_sent(
    make_bus: BusFactory, make_outbox: OutboxFactory
) -> None:
    watcher, inbox = make_bus("dr-lee"), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    first = make_outbox()
    await first.open()
    item = chat("mine")
    await first.put(item)
    await first.aclose()
    await make_bus("someone-else").publish(CHANNEL, item.message)  # same payload, not this user's
    await inbox.wait_for(1)

    restarted = make_outbox()
    await restarted.open()
    restarted.attach(make_bus(SENDER))
    assert await restarted.wait_drained(WAIT)
    received = await everything_after(watcher, inbox, 2)
    assert [(env.publisher, env.message["id"]) for env in received] == [
        ("someone-else", item.id),
        (SENDER, item.id),
    ]


async def test_a_wiped_consultations_items_are_never_sent_and_the_rest_are(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory, log_lines: LogLines
) -> None:
    other = "consultation.dr-lee.pat-2"
    watcher, inbox = make_bus("dr-lee"), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    await watcher.subscribe([other], inbox)
    async with CuttableLink(relay.origin) as link:
        sender = make_bus(SENDER, origin=link.origin)
        statuses = StatusLog(sender)
        await sender.subscribe([f"notification.{SENDER}"])
        await statuses.wait_for(ConnectionStatus.CONNECTED)
        outbox = make_outbox(backoff_min_seconds=0.05, backoff_max_seconds=0.2)
        await outbox.open()
        outbox.attach(sender)
        link.cut()
        wiped = [chat("to wipe 1", other, other), chat("to wipe 2", other, other)]
        kept = chat("kept")
        for item in (wiped[0], kept, wiped[1]):
            await outbox.put(item)
        await log_lines.wait_line("outbox publish failed", wiped[0].id)
        assert await outbox.wipe(other) == wiped
        assert outbox.pending() == [kept]
        link.restore()
        assert await outbox.wait_drained(WAIT)
        received = await everything_after(watcher, inbox, 1)
    assert ids(received) == [kept.id]


async def test_an_unpublishable_item_fails_at_once_and_the_next_one_is_sent(
    make_bus: BusFactory, make_outbox: OutboxFactory, tmp_path: Any
) -> None:
    watcher, inbox = make_bus("dr-lee"), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    too_big, fine = chat("x" * 40_000), chat("fine")
    outbox, results = await sending(make_outbox, make_bus(SENDER), too_big, fine)
    await results.wait_for(2)
    assert results.failed == [(too_big, "not-publishable")]
    assert [item for item, _ in results.sent] == [fine]
    received = await everything_after(watcher, inbox, 1)
    assert ids(received) == [fine.id]
    await outbox.aclose()
    reopened = make_outbox()
    assert await reopened.open() == []  # failed and sent items are off disk


async def test_after_detach_items_wait_for_the_next_bus_and_are_sent_once_on_it(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory, log_lines: LogLines
) -> None:
    watcher, inbox = make_bus("dr-lee"), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    results = Results()
    outbox = make_outbox(results, backoff_min_seconds=0.05, backoff_max_seconds=0.2)
    await outbox.open()
    async with CuttableLink(relay.origin) as link:
        link.cut()
        outbox.attach(make_bus(SENDER, origin=link.origin))
        item = chat("across buses")
        await outbox.put(item)
        await log_lines.wait_line("outbox publish failed", item.id)
        await outbox.detach()
    assert outbox.pending() == [item]
    later = chat("put while detached")
    await outbox.put(later)
    assert not await outbox.wait_drained(0.0)

    outbox.attach(make_bus(SENDER))
    assert await outbox.wait_drained(WAIT)
    received = await everything_after(watcher, inbox, 2)
    assert ids(received) == [item.id, later.id]
    assert [sent for sent, _ in results.sent] == [item, later]


async def test_the_outbox_stores_power_safe_before_and_after_a_delivery(
    make_bus: BusFactory, make_outbox: OutboxFactory
) -> None:
    """An item put() returned for survives a power cut: WAL with synchronous=FULL on the outbox's
    connection, also after a delivery's deletion (which alone may skip the flush)."""
    outbox = make_outbox(Results())
    await outbox.open()
    await outbox.put(chat("first"))
    assert (await outbox.durability()).synchronous == "FULL"
    outbox.attach(make_bus(SENDER))
    assert await outbox.wait_drained(WAIT)  # delivered and deleted
    await outbox.put(chat("second"))
    durability = await outbox.durability()
    assert (durability.journal_mode, durability.synchronous, durability.power_safe) == ("wal", "FULL", True)
