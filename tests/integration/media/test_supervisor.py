"""The media supervisor with real media children (the worker module, aiortc, coturn): a child whose
connection never carried media serves the next connection; one grown over the memory ceiling is
reported once and not reused (a fresh one serves instead); a child of the call that dies is told
with its exit, one that is not in the call is not."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import pytest

from telehealth_client.media.common import TurnConfig
from telehealth_client.media.supervisor import MediaSupervisor
from telehealth_client.media.worker import Devices, MediaWorker
from telehealth_devstack.turn import TurnServer
from tests.support.media import turn_config
from tests.support.recorder import Recorder

pytestmark = pytest.mark.integration

WAIT = 30.0


class Told:
    """What the supervisor reported, for the test to wait on."""

    def __init__(self) -> None:
        self.over_memory: list[tuple[int, float]] = []
        self.died: list[tuple[int, str]] = []
        self._recorder = Recorder()

    def memory(self, worker: MediaWorker, rss_mb: float) -> None:
        self.over_memory.append((worker.pid, rss_mb))
        self._recorder.changed()

    def death(self, worker: MediaWorker, reason: str) -> None:
        self.died.append((worker.pid, reason))
        self._recorder.changed()

    async def until(self, condition: Callable[[], bool]) -> None:
        await self._recorder.until(condition, WAIT)


async def start_bare(worker: MediaWorker, turn: TurnConfig) -> None:
    await worker.start(turn, Devices())


def supervisor(told: Told, *, ceiling: float | None, in_call: set[MediaWorker]) -> MediaSupervisor:
    return MediaSupervisor(
        "consultation.test",
        start=start_bare,
        in_call=lambda worker: worker in in_call,
        on_died=told.death,
        memory_ceiling_mb=ceiling,
        on_over_memory=told.memory,
    )


async def test_a_child_that_carried_nothing_serves_the_next_connection(turn: TurnServer) -> None:
    told = Told()
    children = supervisor(told, ceiling=4096, in_call=set())
    first = await children.child_for(turn_config(turn))
    try:
        assert (await first.offer()).startswith("v=0")
        assert await children.reuse(first, connected=True)  # its offer was never answered
        assert await children.child_for(turn_config(turn)) is first
        assert told.over_memory == [] and told.died == []
    finally:
        await children.aclose()
        await first.aclose()  # handed out: the connection's to close, not the supervisor's


async def test_a_child_over_the_memory_ceiling_is_reported_once_and_not_reused(turn: TurnServer) -> None:
    told = Told()
    # A child holds well over 50 MB once aiortc, OpenCV and PortAudio are loaded: over the ceiling.
    children = supervisor(told, ceiling=50, in_call=set())
    try:
        grown = await children.child_for(turn_config(turn))

        def grown_told() -> list[float]:
            return [rss for pid, rss in told.over_memory if pid == grown.pid]

        await told.until(grown_told)  # its heartbeat carries its resident memory
        assert grown_told()[0] > 50
        assert not await children.reuse(grown, connected=False)
        assert len(grown_told()) == 1  # told once, not at every heartbeat
        fresh = await children.child_for(turn_config(turn))
        assert fresh is not grown
        # Nothing of the supervisor's holds it now: closed with the others.
        children.close_later(grown)
        assert await asyncio.wait_for(asyncio.shield(grown.exited), WAIT) == 0
    finally:
        await children.aclose()


async def test_a_child_of_the_call_that_dies_is_told_with_its_exit(turn: TurnServer) -> None:
    told = Told()
    in_call: set[MediaWorker] = set()
    children = supervisor(told, ceiling=None, in_call=in_call)
    try:
        held = await children.child_for(turn_config(turn))
        spare = await children.child_for(turn_config(turn))
        in_call.add(held)
        os.kill(spare.pid, signal.SIGKILL)  # not in the call: nobody is told
        os.kill(held.pid, signal.SIGKILL)
        await told.until(lambda: told.died)
        assert told.died == [(held.pid, "the media process exited (signal 9)")]
        await asyncio.wait_for(asyncio.shield(spare.exited), WAIT)
        assert [pid for pid, _ in told.died] == [held.pid]
    finally:
        await children.aclose()


async def test_a_prepared_child_whose_connection_is_abandoned_is_closed_not_orphaned(
    turn: TurnServer,
) -> None:
    """A hangup cancels the connection waiting for the prepared child: the child, once prepared,
    is closed (it holds the camera and microphone), not left running with nobody owning it."""
    told = Told()
    started: list[MediaWorker] = []
    credentials = asyncio.Event()

    async def start_recorded(worker: MediaWorker, config: TurnConfig) -> None:
        started.append(worker)
        await start_bare(worker, config)

    children = MediaSupervisor("consultation.test", start=start_recorded, in_call=lambda _worker: False)

    async def turn_when_told() -> TurnConfig:
        await credentials.wait()
        return turn_config(turn)

    try:
        children.prepare(turn_when_told)
        waiting = asyncio.ensure_future(children.child_for(turn_config(turn)))
        await asyncio.sleep(0)  # it waits for the prepared child (nothing else to wait on)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        credentials.set()
        async with asyncio.timeout(WAIT):
            while not started:  # noqa: ASYNC110 - the prepare task's start, nothing to wait on
                await asyncio.sleep(0.05)
        assert await asyncio.wait_for(asyncio.shield(started[0].exited), WAIT) == 0
        assert told.died == []
    finally:
        await children.aclose()
