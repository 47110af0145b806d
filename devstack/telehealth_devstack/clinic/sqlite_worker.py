"""One SQLite connection owned by one thread: the clinic stand-in's durable state.

All SQLite work for a file runs on its own single-thread executor, so the event loop never
blocks on disk and writes are serialised without locks.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class SqliteWorker:
    """``path=None`` keeps the database in memory for the worker's lifetime only."""

    def __init__(self, path: Path | None, schema: str, name: str) -> None:
        self.path = path
        self._schema = schema
        self._name = name
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self._executor is not None:
            raise RuntimeError(f"{self._name} is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self._name}-sqlite")
        try:
            await self._submit(self._open)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close)
        finally:
            # The worker is idle now, so this returns at once.
            executor.shutdown(wait=True)

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` with the connection on the worker's thread."""
        return await self._submit(lambda: job(self._connection()))

    async def _submit(self, job: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError(f"{self._name} is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    # Everything below runs on the worker's own thread.

    def _open(self) -> None:
        target = ":memory:" if self.path is None else str(self.path)
        db = sqlite3.connect(target, isolation_level=None, check_same_thread=True)
        try:
            if self.path is not None:
                self.path.chmod(0o600)  # it holds tokens or audit events: its owner's only
                db.execute("PRAGMA journal_mode=WAL")
            # FULL: what was answered as stored is on disk even if the machine loses power next.
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(self._schema)
        except BaseException:
            db.close()
            raise
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError(f"{self._name} is not open")
        return self._db
