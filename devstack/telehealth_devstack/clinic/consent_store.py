"""The clinic's own record of each patient's telehealth consent, kept in SQLite.

App Context holds the copy that agents read; this is the clinic's record, which survives a
restart of the clinic and of the relay alike.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from .sqlite_worker import SqliteWorker

CONSENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS consent (
    patient_id TEXT PRIMARY KEY,
    granted INTEGER NOT NULL,
    expires_at TEXT,
    recorded_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"""


class ConsentStore:
    def __init__(self, db: SqliteWorker) -> None:
        self._db = db

    async def save(self, patient_id: str, granted: bool, expires_at: str | None) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO consent (patient_id, granted, expires_at) VALUES (?, ?, ?)",
                (patient_id, int(granted), expires_at),
            )

        await self._db.run(write)

    async def get(self, patient_id: str) -> dict[str, Any] | None:
        """``{"granted", "expiresAt"}`` as last recorded, or None if never recorded."""
        row = await self._db.run(
            lambda db: db.execute(
                "SELECT granted, expires_at FROM consent WHERE patient_id = ?", (patient_id,)
            ).fetchone()
        )
        if row is None:
            return None
        granted, expires_at = row
        return {"granted": bool(granted), "expiresAt": expires_at}


def consent_refusal(record: dict[str, Any] | None, now: datetime) -> str | None:
    """Why ``record`` allows no patient token (``missing``, ``not granted``, ``expired``), else None."""
    if record is None:
        return "missing"
    if not record["granted"]:
        return "not granted"
    expires_at = record["expiresAt"]
    if expires_at is not None and datetime.fromisoformat(expires_at) <= now:
        return "expired"
    return None
