"""One SQLite connection owned by one thread: the clinic stand-in's durable state.

All SQLite work for a file runs on its own thread (the product's ``OneThread``, as the agent's
stores do), so the event loop never blocks on disk and writes are serialised without locks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from telehealth_client.durable.one_thread import OneThread

T = TypeVar("T")


class SqliteWorker:
    """``path=None`` keeps the database in memory for the worker's lifetime only."""

    def __init__(self, path: Path | None, schema: str, name: str) -> None:
        self.path = path
        self._schema = schema
        self._name = name
        self._thread = OneThread(name)
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._thread.start()
        try:
            await self._thread.run(self._open)
        except BaseException:
            await self._thread.stop()
            raise

    async def close(self) -> None:
        await self._thread.stop(self._close)

    async def run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` with the connection on the worker's thread."""
        return await self._thread.run(lambda: job(self._connection()))

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
