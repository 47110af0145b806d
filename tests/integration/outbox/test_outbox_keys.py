"""A start with the wrong cipher key on the real relay and SDK: what it cannot read waits, untouched,
for a start with the right key, and what it can read is not held up by it."""

from __future__ import annotations

from telehealth_client.durable.at_rest import Sealer
from tests.support.bus import BusFactory, Inbox, subscribed
from tests.support.logs import LogLines
from tests.support.outbox import CHANNEL, SENDER, WAIT, OutboxFactory, Results, chat, everything_after, ids

RIGHT = "the-right-outbox-key-0123456789"
MISTYPED = "a-mistyped-outbox-key-98765432"


def outbox_key(secret: str, previous: tuple[str, ...] = ()) -> Sealer:
    return Sealer(secret, previous, purpose="outbox")


async def test_items_queued_before_a_start_with_a_mistyped_key_are_sent_once_the_right_key_is_back(
    make_bus: BusFactory, make_outbox: OutboxFactory, log_lines: LogLines
) -> None:
    watcher, inbox = make_bus("dr-lee"), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    first = make_outbox(sealer=outbox_key(RIGHT))
    await first.open()
    queued = [chat("queued one"), chat("queued two")]
    for item in queued:
        await first.put(item)
    await first.aclose()  # stopped before any bus: both wait on disk

    sender = make_bus(SENDER)
    mistyped_results = Results()
    mistyped = make_outbox(mistyped_results, sealer=outbox_key(MISTYPED))
    assert await mistyped.open() == []
    for item in queued:
        assert f"outbox item unreadable, kept for a later start id={item.id}" in "\n".join(log_lines.lines)
    mistyped.attach(sender)
    meanwhile = chat("written during the mistyped start")
    await mistyped.put(meanwhile)
    assert await mistyped.wait_drained(WAIT)  # not held up by what it cannot read
    await mistyped.aclose()
    assert [item for item, _ in mistyped_results.sent] == [meanwhile]

    # The operator fixes the key, and rotates it at once: the old one opens what it sealed.
    results = Results()
    fixed = make_outbox(results, sealer=outbox_key("the-new-outbox-key-5555555555", (RIGHT,)))
    assert await fixed.open() == queued
    fixed.attach(sender)
    assert await fixed.wait_drained(WAIT)
    received = await everything_after(watcher, inbox, 3)
    assert ids(received) == [meanwhile.id, *(item.id for item in queued)]
    assert all(envelope.publisher == SENDER for envelope in received)
    assert results.sent == [
        (item, envelope.timetoken) for item, envelope in zip(queued, received[1:], strict=True)
    ]
    assert results.failed == []
