"""Video previews of a call (the local camera, the remote video) as small JPEGs, only while watched.

A preview is for a person looking (the technician page, through the local API), never a second
call: the media child encodes nothing until the agent asks (``WatchPreviews``), then the newest
frame of each watched side a few times a second, in a worker thread (never on the child's event
loop, which carries the call), and sends each as a ``PreviewImage`` event. The agent keeps the
newest image of each side and wakes whoever waits for the next one; it counts who watches each
side and tells the child only when that set changes (the last watcher gone: the child stops).

- ``PreviewFeed`` (the agent's side, in ``MediaWorker``): ``received(event)``, ``latest(side)``,
  ``await next_after(side, seq, within)``, ``watch(side)`` / ``unwatch(side)`` (each returns the
  sides to ask the child for when the set changed, else None), ``watched``.
- ``PreviewPump`` (the child's side): ``watch(sides, per_second, width)``, ``await aclose()``;
  ``sources(side)`` gives (a number that grows with each new frame, the newest frame or None).

Neither imports aiortc, PyAV or OpenCV: the child's encoder is handed in.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable
from typing import Any

from telehealth_client.logs import describe_exception
from telehealth_client.media.child_messages import PreviewImage, PreviewSide

log = logging.getLogger(__name__)

SIDES: tuple[PreviewSide, ...] = ("local", "remote")

Encoder = Callable[[Any, int], bytes | None]
Sources = Callable[[PreviewSide], tuple[int, Any]]
Emit = Callable[[PreviewImage], None]


class PreviewFeed:
    """The agent's side: the newest JPEG of each side the child sent, and who watches."""

    def __init__(self) -> None:
        self._images: dict[str, tuple[int, bytes]] = {}
        self._watchers: dict[str, int] = dict.fromkeys(SIDES, 0)
        self._changed = asyncio.Event()

    @property
    def watched(self) -> tuple[PreviewSide, ...]:
        return tuple(side for side in SIDES if self._watchers[side] > 0)

    def watch(self, side: PreviewSide) -> tuple[PreviewSide, ...] | None:
        """One more watcher of ``side``: the sides to ask the child for if that set changed."""
        before = self.watched
        self._watchers[side] += 1
        return self.watched if self.watched != before else None

    def unwatch(self, side: PreviewSide) -> tuple[PreviewSide, ...] | None:
        before = self.watched
        self._watchers[side] = max(0, self._watchers[side] - 1)
        if self._watchers[side] == 0:
            self._images.pop(side, None)  # an old image is not shown to the next watcher
        return self.watched if self.watched != before else None

    def received(self, event: PreviewImage) -> None:
        if self._watchers.get(event.side, 0) == 0:
            return  # sent before the child heard that nobody watches any more
        try:
            jpeg = base64.b64decode(event.jpeg, validate=True)
        except (binascii.Error, ValueError):
            log.warning("media child preview dropped side=%s reason=not-base64", event.side)
            return
        self._images[event.side] = (event.seq, jpeg)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def latest(self, side: PreviewSide) -> tuple[int, bytes] | None:
        return self._images.get(side)

    async def next_after(self, side: PreviewSide, seq: int, within: float) -> tuple[int, bytes] | None:
        """The newest image of ``side`` once it is newer than ``seq`` (a child's numbers start at 1;
        a new child's restart, so a caller passes 0 after a switch); None after ``within``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            image = self._images.get(side)
            if image is not None and image[0] != seq:
                return image
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                return None

    def close(self) -> None:
        """The child is gone: whoever waits wakes (and finds nothing new)."""
        self._images.clear()
        self._wake()


class PreviewPump:
    """The child's side: while some side is watched, its newest frame is encoded (in a thread) and
    sent, at most ``per_second`` times a second and only when a new frame came since."""

    def __init__(self, sources: Sources, encode: Encoder, emit: Emit) -> None:
        self._sources = sources
        self._encode = encode
        self._emit = emit
        self._sides: tuple[PreviewSide, ...] = ()
        self._per_second = 8.0
        self._width = 320
        self._task: asyncio.Task[None] | None = None
        self._sent_frame: dict[str, int] = {}  # the source number of the last frame sent, per side
        self._seq: dict[str, int] = dict.fromkeys(SIDES, 0)

    @property
    def sides(self) -> tuple[PreviewSide, ...]:
        return self._sides

    def watch(self, sides: tuple[PreviewSide, ...], per_second: float, width: int) -> None:
        self._sides = tuple(side for side in SIDES if side in sides)
        self._per_second = per_second
        self._width = width
        if self._sides and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._run())
        elif not self._sides and self._task is not None:
            self._task.cancel()
            self._task = None
        self._sent_frame.clear()  # a new watcher gets the current picture at once

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self._sides:
            for side in self._sides:
                await self._send(side)
            next_at += 1.0 / self._per_second
            delay = next_at - loop.time()
            if delay < 0:
                next_at = loop.time()  # behind (a busy machine): the rate drops, no burst follows
                delay = 0.0
            await asyncio.sleep(delay)

    async def _send(self, side: PreviewSide) -> None:
        number, frame = self._sources(side)
        if frame is None or self._sent_frame.get(side) == number:
            return
        try:
            jpeg = await asyncio.to_thread(self._encode, frame, self._width)
        except Exception as exc:
            log.warning("media child preview not encoded side=%s error=%s", side, describe_exception(exc))
            jpeg = None
        self._sent_frame[side] = number
        if jpeg is None or side not in self._sides:
            return
        self._seq[side] += 1
        self._emit(PreviewImage(side=side, seq=self._seq[side], jpeg=base64.b64encode(jpeg).decode()))

    async def aclose(self) -> None:
        self._sides = ()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
