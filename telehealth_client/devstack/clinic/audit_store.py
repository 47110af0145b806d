"""The audit sink's storage: append-only SQLite, one row per event ``id``.

The table refuses UPDATE and DELETE by trigger, and this class offers neither.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from .sqlite_worker import SqliteWorker

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
        self._db = SqliteWorker(path, _SCHEMA, "audit")

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def append(self, event_id: str, event: dict[str, Any]) -> bool:
        """Store ``event`` unless an event with ``event_id`` is stored; True if it was new."""
        text = json.dumps(event, separators=(",", ":"), sort_keys=True)

        def insert(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT INTO audit_events (id, event) VALUES (?, ?) ON CONFLICT(id) DO NOTHING",
                (event_id, text),
            )
            return cursor.rowcount == 1

        return await self._db.run(insert)

    async def events(self) -> list[dict[str, Any]]:
        """Every stored event, in the order the sink first received them."""
        rows = await self._db.run(
            lambda db: db.execute("SELECT event FROM audit_events ORDER BY seq").fetchall()
        )
        return [json.loads(text) for (text,) in rows]

    async def count(self) -> int:
        (count,) = await self._db.run(lambda db: db.execute("SELECT count(*) FROM audit_events").fetchone())
        return int(count)
