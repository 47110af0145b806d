"""What one agent saw: its ``EventHub`` subscription, recorded so a step can wait for an event.

A step never assumes that an agent saw something: it waits (with the step's timeout) for the
event to come out of that agent's own hub, and describes the event it got.

Public API:

- ``Witness(name, hub)``: subscribes at once; ``mark()`` -> the position of the next event;
  ``await seen(matches, after=mark)`` -> the first ``Sighting`` after ``mark`` that ``matches``;
  ``sightings(after=mark)`` -> every ``Sighting`` so far from ``mark`` on;
  ``await aclose()`` unsubscribes and awaits its recorder task.
- ``Sighting(event, at)``: ``at`` is ``time.perf_counter()`` when the recorder got the event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from telehealth_client import events


@dataclass(frozen=True)
class Sighting:
    event: events.Event
    at: float


class Witness:
    def __init__(self, name: str, hub: events.EventHub) -> None:
        self.name = name
        self._subscription = hub.subscribe()
        self._seen: list[Sighting] = []
        self._changed = asyncio.Event()
        self._recorder = asyncio.create_task(self._record(), name=f"demo-witness-{name}")

    async def _record(self) -> None:
        async for event in self._subscription:
            self._seen.append(Sighting(event, time.perf_counter()))
            self._changed.set()

    def mark(self) -> int:
        return len(self._seen)

    async def seen(self, matches: Callable[[events.Event], bool], *, after: int = 0) -> Sighting:
        """The first event from position ``after`` on that ``matches``; waits for it (no timeout:
        the caller bounds the wait)."""
        position = after
        while True:
            while position < len(self._seen):
                sighting = self._seen[position]
                position += 1
                if matches(sighting.event):
                    return sighting
            self._changed.clear()
            await self._changed.wait()

    def sightings(self, *, after: int = 0) -> list[Sighting]:
        return self._seen[after:]

    async def aclose(self) -> None:
        self._subscription.close()
        self._recorder.cancel()
        # asyncio.wait, not await: a cancellation of aclose itself must still propagate.
        await asyncio.wait([self._recorder])
