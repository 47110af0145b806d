"""One thread for one SQLite connection: every store's disk work off the event loop, in order.

SQLite connections belong to the thread that made them, and a store's writes must not interleave.
So each store (the outbox, the audit trail, the clinic stand-in's) runs all of its SQLite work on
its own single-thread executor: the event loop never blocks on disk, and the work is serialised
without locks.

Public API: ``OneThread(name)``; ``start()``; ``await run(job)`` (``job()`` on the thread, its
result or exception); ``await stop(last=None)`` (``last()`` on the thread, e.g. closing the
connection, then the thread ends); ``running``. Using it before ``start`` or after ``stop`` raises
``RuntimeError`` naming the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class OneThread:
    def __init__(self, name: str) -> None:
        self._name = name
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._executor is not None

    def start(self) -> None:
        if self._executor is not None:
            raise RuntimeError(f"the {self._name} is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self._name}-sqlite")

    async def run(self, job: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError(f"the {self._name} is not open: call open() first")
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    async def stop(self, last: Callable[[], None] | None = None) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            if last is not None:
                await asyncio.get_running_loop().run_in_executor(executor, last)
        finally:
            executor.shutdown(wait=True)  # idle now: returns at once
