"""The outbox bounded on disk (issue 24, item 7): what is sent gives its space back, and what waited
longer than the retention ends as ``expired``, off memory and disk, while the rest is still sent.

Real parts: the relay and the real SDK deliver; the file is the outbox's own SQLite file. The
retention's cutoff is a timetoken taken between two puts (every put is on disk before it returns),
never a wait.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from telehealth_client.durable.sqlite import files_bytes
from telehealth_devstack.relay import Relay
from tests.support.bus import BusFactory, Inbox, subscribed
from tests.support.outbox import CHANNEL, SENDER, WAIT, OutboxFactory, Results, chat, everything_after, ids


def now_timetoken() -> int:
    return time.time_ns() // 100


def stored_ids(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [str(item_id) for (item_id,) in db.execute("SELECT id FROM pending ORDER BY seq")]
    finally:
        db.close()


async def test_items_older_than_the_cutoff_expire_and_the_newer_ones_are_still_sent(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory, tmp_path: Path
) -> None:
    results = Results()
    outbox = make_outbox(results)
    await outbox.open()
    old = [chat(f"long ago {n}") for n in range(3)]
    for item in old:
        await outbox.put(item)
    cutoff = now_timetoken()
    new = [chat(f"just now {n}") for n in range(2)]
    for item in new:
        await outbox.put(item)

    expired = await outbox.expire(cutoff)
    assert expired == old
    assert results.failed == [(item, "expired") for item in old]
    assert outbox.pending() == new
    assert stored_ids(tmp_path / "outbox.sqlite3") == [item.id for item in new]
    waiting, size = await outbox.backlog()
    assert waiting == 2 and size > 2 * len("just now 0")  # sealed: longer than the text
    assert await outbox.expire(cutoff) == []  # nothing left that old
    await outbox.put(old[0])  # an expired id put again is not sent again
    assert outbox.pending() == new

    watcher, inbox = make_bus("dr-lee"), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    outbox.attach(make_bus(SENDER))
    assert await outbox.wait_drained(WAIT)
    received = await everything_after(watcher, inbox, len(new))
    assert ids(received) == [item.id for item in new]
    assert [item for item, _ in results.sent] == new


async def test_expired_items_stay_gone_after_a_restart(make_outbox: OutboxFactory, tmp_path: Path) -> None:
    first = make_outbox(Results())
    await first.open()
    stale, fresh = chat("stale"), chat("fresh")
    await first.put(stale)
    cutoff = now_timetoken()
    await first.put(fresh)
    await first.expire(cutoff)
    await first.aclose()
    again = make_outbox(Results())
    assert await again.open() == [fresh]


async def test_what_was_sent_gives_its_space_back_to_the_disk(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.sqlite3"
    results = Results()
    outbox = make_outbox(results)
    await outbox.open()
    items = [chat(f"{n} " + "a long line of chat " * 150) for n in range(150)]  # about 3 KB each
    for item in items:
        await outbox.put(item)
    full = files_bytes(path)
    outbox.attach(make_bus(SENDER))
    assert await outbox.wait_drained(WAIT)
    assert len(results.sent) == len(items)
    assert await outbox.backlog() == (0, 0)
    assert await outbox.compact(at_least=64 * 1024)
    assert files_bytes(path) < full / 4, (full, files_bytes(path))
    assert not await outbox.compact(at_least=64 * 1024)  # nothing more to give back
