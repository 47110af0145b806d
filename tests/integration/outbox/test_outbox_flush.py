"""``Outbox.flush``, a stop's last chance to send (issue 24), on the real relay and SDK: it sends what
waits; it gives up as soon as every channel's attempt fails rather than wait out its time, after
cutting the back-offs short; a relay that does not answer holds it for its time only."""

from __future__ import annotations

import time
from typing import Any

from telehealth_client.durable.outbox import Outbox
from telehealth_devstack.relay import Relay
from tests.support.bus import BusFactory, Inbox, subscribed
from tests.support.logs import LogLines
from tests.support.outbox import CHANNEL, SENDER, WAIT, OutboxFactory, Results, chat, everything_after, ids

# Far beyond what the tests wait: only a flush can end these back-offs in time.
LONG_BACKOFF = {"backoff_min_seconds": 60.0, "backoff_max_seconds": 60.0}
OTHER_CHANNEL = "consultation.dr-okafor.pat-1"


async def attached(make_outbox: OutboxFactory, make_bus: BusFactory, **options: Any) -> Outbox:
    """An opened outbox attached to the sender's bus."""
    outbox = make_outbox(Results(), **options)
    await outbox.open()
    outbox.attach(make_bus(SENDER))
    return outbox


async def timed_flush(outbox: Outbox, within: float, **options: Any) -> tuple[bool, float]:
    """``flush``'s answer and the seconds it took."""
    began = time.monotonic()
    flushed = await outbox.flush(within, **options)
    return flushed, time.monotonic() - began


async def test_flush_sends_what_waits(make_bus: BusFactory, make_outbox: OutboxFactory) -> None:
    watcher, inbox = make_bus("dr-lee"), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    outbox = make_outbox(Results())
    await outbox.open()
    items = [chat(f"before the stop {n}") for n in range(5)]
    for item in items:
        await outbox.put(item)
    outbox.attach(make_bus(SENDER))
    assert await outbox.flush(WAIT)
    assert outbox.pending() == []
    assert ids(await everything_after(watcher, inbox, len(items))) == [item.id for item in items]


async def test_flush_gives_up_once_every_channel_failed_again_and_keeps_everything(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory, log_lines: LogLines
) -> None:
    outbox = await attached(make_outbox, make_bus, **LONG_BACKOFF)
    relay.fail_next(10**9, 503)
    items = [chat(f"refused {n}") for n in range(3)] + [chat("elsewhere", channel=OTHER_CHANNEL)]
    for item in items:
        await outbox.put(item)
    await log_lines.wait_line("outbox publish failed", items[0].id)
    await log_lines.wait_line("outbox publish failed", items[-1].id)
    failures = len([line for line in log_lines.lines if "outbox" in line and "failed" in line])

    flushed, took = await timed_flush(outbox, WAIT)
    assert not flushed
    relay.fail_next(0, 503)

    assert took < WAIT / 3, took  # its failures ended it, not its time
    # Both channels tried again at once (their 60 s back-offs cut short) before it gave up.
    assert len([line for line in log_lines.lines if "outbox" in line and "failed" in line]) >= failures + 2
    assert "outbox flush ended: left for the next bus items=4 every_channel_failing=yes" in log_lines.lines
    assert outbox.pending() == items


async def test_flush_on_a_relay_that_does_not_answer_waits_its_time_only(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory
) -> None:
    outbox = await attached(make_outbox, make_bus)
    relay.stall()
    try:
        item = chat("held")
        await outbox.put(item)
        flushed, took = await timed_flush(outbox, 1.0)
        assert not flushed
        await outbox.detach(0.0)  # the publish in flight is cancelled: it stays for the next bus
    finally:
        relay.resume()
    assert 1.0 <= took < WAIT / 3, took
    assert outbox.pending() == [item]


async def test_flush_told_not_to_give_up_waits_its_time_through_failures(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory, log_lines: LogLines
) -> None:
    """A consultation's end (not a stop): its failures do not end the wait, its time does."""
    outbox = await attached(make_outbox, make_bus, **LONG_BACKOFF)
    relay.fail_next(10**9, 503)
    try:
        item = chat("refused")
        await outbox.put(item)
        await log_lines.wait_line("outbox publish failed", item.id)
        flushed, took = await timed_flush(outbox, 1.0, give_up_on_failure=False)
        assert not flushed
    finally:
        relay.fail_next(0, 503)
    assert 1.0 <= took < WAIT / 3, took
    # It knew every attempt was failing, and waited all the same.
    assert "outbox flush ended: left for the next bus items=1 every_channel_failing=yes" in log_lines.lines
    assert outbox.pending() == [item]
