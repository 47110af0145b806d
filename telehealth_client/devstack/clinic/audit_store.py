"""The audit sink's storage: append-only SQLite, one row per event ``id``.

All SQLite work runs on one dedicated thread that owns the connection, so the event
loop never blocks on disk and writes are serialised without locks. The table refuses
UPDATE and DELETE by trigger, and this class offers neither.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    event TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
"""


class AuditStore:
    """``path=None`` keeps the events in memory for the store's lifetime only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        if self._executor is not None:
            raise RuntimeError("AuditStore is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-sqlite")
        try:
            await self._run(self._open)
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

    async def append(self, event_id: str, event: dict[str, Any]) -> bool:
        """Store ``event`` unless an event with ``event_id`` is stored; True if it was new."""
        text = json.dumps(event, separators=(",", ":"), sort_keys=True)
        return await self._run(lambda: self._insert(event_id, text))

    async def events(self) -> list[dict[str, Any]]:
        """Every stored event, in the order the sink first received them."""
        rows = await self._run(self._select_all)
        return [json.loads(text) for text in rows]

    async def count(self) -> int:
        return await self._run(self._count)

    async def _run(self, job: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("AuditStore is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    # Everything below runs on the store's own thread.

    def _open(self) -> None:
        target = ":memory:" if self.path is None else str(self.path)
        db = sqlite3.connect(target, isolation_level=None)
        try:
            if self.path is not None:
                db.execute("PRAGMA journal_mode=WAL")
            # FULL: an event answered with 201 is on disk even if the machine loses power next.
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
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
            raise RuntimeError("AuditStore is not open")
        return self._db

    def _insert(self, event_id: str, text: str) -> bool:
        cursor = self._connection().execute(
            "INSERT INTO audit_events (id, event) VALUES (?, ?) ON CONFLICT(id) DO NOTHING", (event_id, text)
        )
        return cursor.rowcount == 1

    def _select_all(self) -> list[str]:
        rows = self._connection().execute("SELECT event FROM audit_events ORDER BY seq").fetchall()
        return [row[0] for row in rows]

    def _count(self) -> int:
        (count,) = self._connection().execute("SELECT count(*) FROM audit_events").fetchone()
        return int(count)
