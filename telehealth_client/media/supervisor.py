"""The one owner of a call's media child processes (``MediaWorker``).

Each connection of a call runs in a child of its own. The supervisor hands a started child to each
new connection: the one prepared for the first connection (devices open, TURN checked), else an
idle one (its connection never carried media), else the warm spare (aiortc, OpenCV and PortAudio
already loaded), else a fresh one; and warms the next spare behind it. It takes back a child whose
connection never carried media (``reuse``), kills one that falls silent (no heartbeat: a stuck codec,
a stopped process) and tells which child of the call died and why (``on_died``). A child whose
memory grew over the ceiling is not reused: it is closed and replaced between connections (never
in the middle of one), and reported (``on_over_memory``). Closing happens in tasks of its own,
never on the caller's path, and ``aclose`` waits for every child to be gone.

Public API: ``MediaSupervisor(label, env=None, start=..., on_event=None, on_died=None,
in_call=..., memory_ceiling_mb=None, on_over_memory=None)``; ``warm_up()``, ``prepare()``,
``await prepared()``, ``await child_for(turn)``, ``await reuse(child, connected)``,
``await fresh_child()``, ``close_later(child)``,
``spawn(coroutine, name)`` (a task it owns), ``await aclose()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from telehealth_client.logs import describe_exception
from telehealth_client.media.child_messages import ChildEvent, Heartbeat
from telehealth_client.media.common import CallError, TurnConfig
from telehealth_client.media.worker import MediaWorker, describe_exit
from telehealth_client.tasks import OwnedTasks

log = logging.getLogger(__name__)
T = TypeVar("T")

HUNG = "the media process stopped answering"

StartChild = Callable[[MediaWorker, TurnConfig], Awaitable[None]]
EventHandler = Callable[[MediaWorker, ChildEvent], None]
ChildDied = Callable[[MediaWorker, str], None]
OverMemory = Callable[[MediaWorker, float], None]


class MediaSupervisor:
    def __init__(
        self,
        label: str,
        *,
        start: StartChild,
        in_call: Callable[[MediaWorker], bool],
        env: Mapping[str, str] | None = None,
        on_event: EventHandler | None = None,
        on_died: ChildDied | None = None,
        memory_ceiling_mb: float | None = None,
        on_over_memory: OverMemory | None = None,
    ) -> None:
        self._label = label  # the consultation ID, for the log
        self._start = start  # (child, turn): started for a connection
        self._in_call = in_call
        self._env = env
        self._on_event = on_event
        self._on_died = on_died
        self._memory_ceiling_mb = memory_ceiling_mb
        self._on_over_memory = on_over_memory
        self._warm: asyncio.Task[MediaWorker] | None = None
        self._idle: MediaWorker | None = None  # started once, never connected: the next to use
        # The first connection's child, its devices open and TURN checked (a call is imminent).
        self._prepared: asyncio.Task[MediaWorker] | None = None
        self._hung: set[MediaWorker] = set()  # killed for their silence
        self._reported: set[MediaWorker] = set()  # told over the ceiling already
        self._tasks = OwnedTasks()
        self._closes = OwnedTasks()  # children being closed: awaited, never cancelled
        self._closing = False

    # -- tasks and closes ---------------------------------------------------------------------------

    def spawn(self, coroutine: Awaitable[T], name: str) -> asyncio.Task[T]:
        """A task owned here: cancelled and awaited at ``aclose``."""
        return self._tasks.spawn(coroutine, name)

    def close_later(self, worker: MediaWorker) -> None:
        self._closes.spawn(worker.aclose(), "media-child-close")

    async def aclose(self) -> None:
        self._closing = True
        prepared, self._prepared = self._prepared, None
        await self._abandon(prepared)
        await self._tasks.cancel_all()
        warm, self._warm = self._warm, None
        await self._abandon(warm)
        idle, self._idle = self._idle, None
        if idle is not None:
            self.close_later(idle)
        await self._closes.finish()

    async def _abandon(self, starting: asyncio.Task[MediaWorker] | None) -> None:
        """Cancel a child still starting; one that started anyway is closed like the others."""
        if starting is None:
            return
        starting.cancel()
        worker = (await asyncio.gather(starting, return_exceptions=True))[0]
        if isinstance(worker, MediaWorker):
            self.close_later(worker)

    # -- spawning and watching ----------------------------------------------------------------------

    async def fresh_child(self) -> MediaWorker:
        """A new child, watched like the call's (killed if it falls silent), not started for a
        connection: the preflight's echo test runs in it. The caller hands it to ``close_later``."""
        return await self._spawn_watched()

    def warm_up(self) -> None:
        if self._warm is None and not self._closing:
            self._warm = asyncio.ensure_future(self._spawn_watched())

    async def _spawn_watched(self) -> MediaWorker:
        """A fresh child, watched from its first moment: one that hangs is killed, one that dies
        is reported if it was in the call."""
        spawned: list[MediaWorker] = []
        worker = await MediaWorker.spawn(
            on_event=lambda event: self._heard(spawned[0] if spawned else None, event),
            env=self._env,
        )
        spawned.append(worker)
        self.spawn(self._kill_if_silent(worker), "media-child-silence")
        self.spawn(self._watch(worker), "media-child-watch")
        return worker

    def _heard(self, worker: MediaWorker | None, event: ChildEvent) -> None:
        if worker is None or self._closing:
            return
        if isinstance(event, Heartbeat):
            self._check_memory(worker)
            return
        if self._on_event is not None:
            self._on_event(worker, event)

    async def _kill_if_silent(self, worker: MediaWorker) -> None:
        """A child that hangs (a stuck codec, a stopped process) will not answer: make it a dead one
        (``_watch`` then treats it as any child that died)."""
        watched: set[asyncio.Future[Any]] = {worker.exited, worker.silent}
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if not worker.exited.done():
            log.error("media child hangs consultation=%s pid=%d: killing it", self._label, worker.pid)
            self._hung.add(worker)
            worker.kill()

    async def _watch(self, worker: MediaWorker) -> None:
        # Shielded: this task is cancelled at close, and must not cancel the future with it
        # (``aclose`` would then take the child for exited and wait for it for ever).
        code = await asyncio.shield(worker.exited)
        hung = worker in self._hung
        self._hung.discard(worker)
        self._reported.discard(worker)
        if self._idle is worker:
            self._idle = None
        if self._closing or not self._in_call(worker):
            return  # closed on purpose, or not (or no longer) in the call
        reason = HUNG if hung else f"the media process exited ({describe_exit(code)})"
        log.error("media child died consultation=%s pid=%d reason=%s", self._label, worker.pid, reason)
        if self._on_died is not None:
            self._on_died(worker, reason)

    # -- memory -------------------------------------------------------------------------------------

    def _over_memory(self, worker: MediaWorker) -> bool:
        ceiling, rss = self._memory_ceiling_mb, worker.rss_mb
        return ceiling is not None and rss is not None and rss > ceiling

    def _check_memory(self, worker: MediaWorker) -> None:
        """Told once per child as it crosses the ceiling; it is replaced at its next hand-over."""
        if worker in self._reported or not self._over_memory(worker):
            return
        self._reported.add(worker)
        rss = worker.rss_mb or 0.0
        log.warning(
            "media child over its memory ceiling consultation=%s pid=%d rss_mb=%.0f ceiling_mb=%.0f: "
            "replaced between connections",
            self._label,
            worker.pid,
            rss,
            self._memory_ceiling_mb or 0.0,
        )
        if self._on_over_memory is not None:
            self._on_over_memory(worker, rss)

    # -- handing children out -----------------------------------------------------------------------

    def prepare(self, turn: Callable[[], Awaitable[TurnConfig]]) -> None:
        """Start preparing the first connection's child (no-op if one is prepared or preparing)."""
        if self._prepared is None and not self._closing:
            self._prepared = self.spawn(self._prepared_child(turn), "media-child-prepare")

    async def _prepared_child(self, turn: Callable[[], Awaitable[TurnConfig]]) -> MediaWorker:
        config = await turn()
        worker = await self._take_warm()
        try:
            await self._start(worker, config)
            await worker.prepare()
        except BaseException:
            self.close_later(worker)
            raise
        log.info("media prepared consultation=%s pid=%d", self._label, worker.pid)
        return worker

    async def prepared(self) -> MediaWorker | None:
        """The child being prepared for the first connection, once it is (None if none is, or its
        preparation failed)."""
        task = self._prepared
        if task is None:
            return None
        result = (await asyncio.gather(asyncio.shield(task), return_exceptions=True))[0]
        return result if isinstance(result, MediaWorker) else None

    async def _take_prepared(self, turn: TurnConfig) -> MediaWorker | None:
        """The prepared child, if it was prepared with these credentials (else it serves as an
        idle one); None if there is none or its preparation failed."""
        prepared, self._prepared = self._prepared, None
        if prepared is None:
            return None
        try:
            worker = await asyncio.shield(prepared)
        except asyncio.CancelledError:
            # The connection it was for is abandoned (a hangup): the child, when it is ready, is
            # closed, never left holding the camera with nobody owning it.
            prepared.add_done_callback(self._close_result)
            raise
        except Exception as exc:
            log.warning("media not prepared consultation=%s error=%s", self._label, describe_exception(exc))
            return None
        if worker.exited.done():
            return None
        if worker.turn != turn:
            try:
                await worker.reset()  # fresh credentials since: started afresh with them
            except CallError:
                self.close_later(worker)  # gone meanwhile: the watch reports nothing (not in the call)
                return None
            except asyncio.CancelledError:
                self.close_later(worker)  # abandoned on the way: not left open with nobody owning it
                raise
            self._keep_idle(worker)
            return None
        return worker

    def _close_result(self, task: asyncio.Task[MediaWorker]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.close_later(task.result())

    def _keep_idle(self, worker: MediaWorker) -> None:
        previous, self._idle = self._idle, worker
        if previous is not None and previous is not worker:
            self.close_later(previous)

    async def child_for(self, turn: TurnConfig) -> MediaWorker:
        """A started child for a new connection: the prepared one, else the idle one, else the warm
        spare (a fresh one if that did not come up), and a new spare warms up behind it."""
        prepared = await self._take_prepared(turn)
        if prepared is not None:
            return prepared
        worker, self._idle = self._idle, None
        if worker is not None and self._over_memory(worker):
            self.close_later(worker)  # grown over the ceiling: a fresh one instead
            worker = None
        if worker is None or worker.exited.done():
            worker = await self._take_warm()
        try:
            try:
                await self._start(worker, turn)
            except CallError as exc:
                if exc.code != "media-process":
                    raise
                # The spare died or hung while it waited (it was killed): take a fresh one.
                log.warning(
                    "media child unusable consultation=%s reason=%s: taking a fresh one",
                    self._label,
                    exc.reason,
                )
                self.close_later(worker)
                worker = await self._spawn_watched()
                await self._start(worker, turn)
        except BaseException:
            # Not handed over (a failed start, or the connection abandoned by a hangup): ours to close.
            self.close_later(worker)
            raise
        return worker

    async def _take_warm(self) -> MediaWorker:
        self.warm_up()
        warm, self._warm = self._warm, None
        assert warm is not None
        try:
            worker = await warm
        except Exception:
            worker = await self._spawn_watched()  # the warm child did not come up: one more try, cold
        self.warm_up()  # a spare for the next connection: a rebuild must not wait for aiortc's import
        return worker

    async def reuse(self, worker: object, connected: bool) -> bool:
        """A child whose connection never carried media (its offer or answer failed: it is idle
        already; or superseded, given up: ``connected``, reset first) serves the next connection
        instead of a fresh spawn; one over the memory ceiling does not."""
        if self._closing or not isinstance(worker, MediaWorker) or worker.exited.done():
            return False
        if self._over_memory(worker):
            self._check_memory(worker)
            return False
        if connected:
            try:
                await worker.reset()
            except CallError as exc:
                log.warning("media child not reused consultation=%s reason=%s", self._label, exc.reason)
                return False
        if self._closing or worker.exited.done():
            return False
        self._keep_idle(worker)
        return True
