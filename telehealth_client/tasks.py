"""Background tasks with an owner: every task the agent starts belongs to an object that ends it.

``OwnedTasks`` is that owner's set: ``spawn`` starts a task (named, forgotten once done), and the
owner ends them its way at close: ``cancel_all()`` (work that may stop: lookups, readers, loops),
``finish()`` (work that must not be abandoned: a save, an audit record, a child's close), or
``wait(within)`` (as long as the caller can afford; the rest goes on, still owned).

Public API: ``OwnedTasks()``; ``spawn(awaitable, name=None) -> Task``; ``len()``, ``bool()``;
``await cancel_all()``; ``await finish()``; ``await wait(within)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class OwnedTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def spawn(self, awaitable: Awaitable[T], name: str | None = None) -> asyncio.Task[T]:
        coroutine = awaitable if isinstance(awaitable, Coroutine) else _awaited(awaitable)
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel_all(self) -> None:
        """Cancel every task and wait until each has ended (their exceptions are theirs)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def finish(self) -> None:
        """Wait until every task has ended, also those started meanwhile; none is cancelled."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def wait(self, within: float) -> None:
        """Wait for the tasks running now, at most ``within`` seconds; those left go on."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=within)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable
