"""The audit sink's storage: append-only SQLite, one row per event ``id``.

The event table refuses UPDATE and DELETE by trigger, and this class offers neither. Each event
that names a device's ``sequence`` also takes that (device, sequence) slot for good, so a device
rolled back and re-using numbers is refused rather than merged. ``audit_heads`` keeps, per device,
the highest sequence held with no gap below it: what the sink acknowledges.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
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
CREATE TABLE IF NOT EXISTS audit_sequences (
    device_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (device_id, sequence)
);
CREATE TRIGGER IF NOT EXISTS audit_sequences_no_update BEFORE UPDATE ON audit_sequences
BEGIN SELECT RAISE(ABORT, 'audit_sequences is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_sequences_no_delete BEFORE DELETE ON audit_sequences
BEGIN SELECT RAISE(ABORT, 'audit_sequences is append-only'); END;
CREATE TABLE IF NOT EXISTS audit_heads (
    device_id TEXT PRIMARY KEY,
    highest_sequence INTEGER NOT NULL
);
"""


class SequenceTaken(Exception):
    """Another event already holds this (device, sequence): nothing was stored."""


@dataclass(frozen=True, slots=True)
class Appended:
    stored: bool  # False: an event with this id was stored before (this one was not)
    highest_sequence: int  # the device's highest sequence with no gap below it


def _head(db: sqlite3.Connection, device_id: str) -> int:
    row = db.execute("SELECT highest_sequence FROM audit_heads WHERE device_id = ?", (device_id,)).fetchone()
    return 0 if row is None else int(row[0])


def _advance_head(db: sqlite3.Connection, device_id: str) -> int:
    """Move the device's head over every sequence now held right above it; the new head."""
    head = _head(db, device_id)
    moved = head
    while db.execute(
        "SELECT 1 FROM audit_sequences WHERE device_id = ? AND sequence = ?", (device_id, moved + 1)
    ).fetchone():
        moved += 1
    if moved != head:
        db.execute(
            "INSERT INTO audit_heads (device_id, highest_sequence) VALUES (?, ?) "
            "ON CONFLICT(device_id) DO UPDATE SET highest_sequence = excluded.highest_sequence",
            (device_id, moved),
        )
    return moved


class AuditStore:
    """``path=None`` keeps the events in memory for the store's lifetime only."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db = SqliteWorker(path, _SCHEMA, "audit")

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    async def append(
        self, event_id: str, event: dict[str, Any], device_id: str, sequence: int | None
    ) -> Appended:
        """Store ``event`` unless an event with ``event_id`` is stored (then nothing changes).

        ``sequence``: the recording device's counter for it, if the event carries one;
        SequenceTaken if another event holds it already.
        """
        text = json.dumps(event, separators=(",", ":"), sort_keys=True)

        def insert(db: sqlite3.Connection) -> Appended:
            with db:  # one transaction: the event and its sequence slot, or neither
                db.execute("BEGIN IMMEDIATE")
                if db.execute("SELECT 1 FROM audit_events WHERE id = ?", (event_id,)).fetchone():
                    return Appended(False, _head(db, device_id))
                if sequence is not None:
                    if db.execute(
                        "SELECT 1 FROM audit_sequences WHERE device_id = ? AND sequence = ?",
                        (device_id, sequence),
                    ).fetchone():
                        raise SequenceTaken
                    db.execute(
                        "INSERT INTO audit_sequences (device_id, sequence, id) VALUES (?, ?, ?)",
                        (device_id, sequence, event_id),
                    )
                db.execute("INSERT INTO audit_events (id, event) VALUES (?, ?)", (event_id, text))
                return Appended(True, _advance_head(db, device_id))

        return await self._db.run(insert)

    async def highest_sequence(self, device_id: str) -> int:
        """The highest sequence held for ``device_id`` with no gap below it (0 if none)."""
        return await self._db.run(lambda db: _head(db, device_id))

    async def events(self) -> list[dict[str, Any]]:
        """Every stored event, in the order the sink first received them."""
        rows = await self._db.run(
            lambda db: db.execute("SELECT event FROM audit_events ORDER BY seq").fetchall()
        )
        return [json.loads(text) for (text,) in rows]

    async def count(self) -> int:
        (count,) = await self._db.run(lambda db: db.execute("SELECT count(*) FROM audit_events").fetchone())
        return int(count)
