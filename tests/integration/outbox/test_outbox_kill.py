"""SIGKILL: what ``put()`` returned for is on disk, and a new process sends it exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from telehealth_devstack.network import CuttableLink
from telehealth_devstack.relay import Relay
from tests.integration.outbox.lossy_answers import LossyAnswers
from tests.support.bus import CIPHER_KEY, PUBLISH_KEY, SUBSCRIBE_KEY, BusFactory, Inbox, subscribed
from tests.support.cli import Process
from tests.support.outbox import CHANNEL, SENDER, WAIT, everything_after, ids

ROOT = Path(__file__).resolve().parents[3]
Spawn = Callable[..., Awaitable[Process]]


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Spawn]:
    """Starts ``outbox_child`` processes on ``tmp_path/outbox.sqlite3``; kills any left at the end."""
    started: list[Process] = []

    async def start(mode: str, origin: str, *args: str) -> Process:
        bus = {
            "user_id": SENDER,
            "subscribe_key": SUBSCRIBE_KEY,
            "publish_key": PUBLISH_KEY,
            "origin": origin,
            "ssl": False,
            "cipher_key": CIPHER_KEY,
            "reconnect_min_seconds": 0.05,
            "reconnect_max_seconds": 0.5,
            "request_timeout_seconds": 5.0,
        }
        env = {**os.environ, "OUTBOX_CHILD_BUS": json.dumps(bus), "OUTBOX_CHILD_SECRET": CIPHER_KEY}
        child = "tests.integration.outbox.outbox_child"
        database = str(tmp_path / "outbox.sqlite3")
        process = await Process.spawn(sys.executable, "-m", child, mode, database, *args, cwd=ROOT, env=env)
        started.append(process)
        return process

    yield start
    for process in started:
        await process.kill()


async def kill(process: Process) -> None:
    process.send_signal(signal.SIGKILL)
    assert await process.exited(WAIT) == -signal.SIGKILL


async def read_ids(process: Process, prefix: str, count: int) -> list[str]:
    return [(await process.next_line(prefix)).split()[1] for _ in range(count)]


async def killed_while_putting(relay: Relay, spawn: Spawn, total: int, read: int) -> list[str]:
    """A process puts ``total`` items while the relay is unreachable and is SIGKILLed once it printed
    ``read`` of their ids: those ids, in the order put."""
    async with CuttableLink(relay.origin) as link:
        link.cut()  # the relay is unreachable for this process
        putter = await spawn("put", link.origin, str(total), CHANNEL)
        await putter.next_line("pending 0")
        printed = await read_ids(putter, "put ", read)
        await kill(putter)  # in the middle of putting, or just after
    return printed


async def test_items_put_before_a_sigkill_are_sent_once_by_the_next_process(
    relay: Relay, make_bus: BusFactory, spawn: Spawn
) -> None:
    watcher, inbox = make_bus("dr-lee"), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    printed = await killed_while_putting(relay, spawn, 60, 20)  # in the middle of putting

    sender = await spawn("send", relay.origin)
    pending = int((await sender.next_line("pending ")).split()[1])
    assert pending >= len(printed)
    rc, out, err = await sender.finish(within=60)
    assert rc == 0, err
    assert "drained" in out

    delivered = ids(await everything_after(watcher, inbox, pending))  # duplicates come before the sentinel
    assert len(delivered) == len(set(delivered)) == pending
    assert delivered[: len(printed)] == printed  # every printed id, once, in the order put


async def test_a_sigkill_after_a_publish_landed_unanswered_does_not_send_it_twice(
    relay: Relay, make_bus: BusFactory, spawn: Spawn
) -> None:
    watcher, inbox = make_bus("dr-lee"), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    printed = await killed_while_putting(relay, spawn, 40, 40)

    async with LossyAnswers(relay) as lossy:
        # The sixth publish reaches the relay and is stored; its answer never comes back.
        lossy.lose_next_publish_answers(1, mode="hold", after=5)
        first = await spawn("send", lossy.origin)
        await first.next_line("pending 40")
        await asyncio.wait_for(lossy.wait_lost(1), WAIT)
        await kill(first)  # the sixth item is still on disk, and in the channel's history

    second = await spawn("send", relay.origin)
    pending = int((await second.next_line("pending ")).split()[1])
    assert pending >= len(printed) - 5
    rc, out, err = await second.finish(within=60)
    assert rc == 0, err

    assert ids(await everything_after(watcher, inbox, len(printed))) == printed
    assert f"sent {printed[5]}" in out  # found in history by the second process, not published again
