"""The one way a test waits for something to have happened: record it, then wait for it with a
timeout, never a sleep.

``Recorder``: ``add(item)`` (also ``recorder(item)``, so it can be handed as a callback) keeps
``items`` in arrival order; ``await wait_for(matches, count=1, within=...)`` returns the matching
items once there are ``count``; ``await until(condition, within=...)`` returns once ``condition()``
holds, checked again after every item. ``changed()`` wakes the waiters for a subclass that records
in its own lists.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

WAIT = 10.0


class Recorder:
    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()

    def add(self, item: Any) -> None:
        self.items.append(item)
        self.changed()

    __call__ = add

    def changed(self) -> None:
        self._changed.set()

    async def until(self, condition: Callable[[], bool], within: float = WAIT) -> None:
        async def holds() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(holds(), within)

    async def wait_for(
        self, matches: Callable[[Any], bool], count: int = 1, within: float = WAIT
    ) -> list[Any]:
        found: list[Any] = []

        def enough() -> bool:
            found[:] = [item for item in self.items if matches(item)]
            return len(found) >= count

        await self.until(enough, within)
        return found
