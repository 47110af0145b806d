"""Which nurse is assigned to which consultation: what a nurse's token naming a consultation needs.

Kept in the clinic's SQLite state beside the invitations, so an assignment (and its end) outlives
a restart of the clinic. An assignment stands until the consultation's provider revokes the
nurse's access (which it does for everyone when the consultation ends).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from .sqlite_worker import SqliteWorker

ASSIGNMENT_SCHEMA = """
CREATE TABLE IF NOT EXISTS nurse_assignments (
    consultation_channel TEXT NOT NULL,
    nurse_id TEXT NOT NULL,
    assigned_by TEXT NOT NULL,
    assigned_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (consultation_channel, nurse_id)
);
"""


@dataclass(frozen=True)
class Assignment:
    consultation_channel: str
    nurse_id: str
    assigned_by: str


class AssignmentStore:
    def __init__(self, db: SqliteWorker) -> None:
        self._db = db

    async def save(self, assignment: Assignment) -> None:
        """Record ``assignment``; assigning the same nurse again changes nothing but its time."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO nurse_assignments (consultation_channel, nurse_id, assigned_by) "
                "VALUES (?, ?, ?)",
                (assignment.consultation_channel, assignment.nurse_id, assignment.assigned_by),
            )

        await self._db.run(write)

    async def get(self, consultation_channel: str, nurse_id: str) -> Assignment | None:
        row = await self._db.run(
            lambda db: db.execute(
                "SELECT assigned_by FROM nurse_assignments WHERE consultation_channel = ? AND nurse_id = ?",
                (consultation_channel, nurse_id),
            ).fetchone()
        )
        return None if row is None else Assignment(consultation_channel, nurse_id, row[0])

    async def remove(self, consultation_channel: str, nurse_id: str) -> bool:
        """End the assignment; True if there was one."""

        def delete(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "DELETE FROM nurse_assignments WHERE consultation_channel = ? AND nurse_id = ?",
                (consultation_channel, nurse_id),
            )
            return cursor.rowcount == 1

        return await self._db.run(delete)
