"""Which providers a consultation's provider has invited: what an invited provider's token needs.

Kept in the clinic's SQLite state beside the token ledger, so an invitation (and its end) outlives
a restart of the clinic. An invitation stands until the consultation's provider revokes the
invited provider's access.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import cast

from ..grants import InvitedRole
from .sqlite_worker import SqliteWorker

INVITATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS invitations (
    consultation_channel TEXT NOT NULL,
    provider_id TEXT NOT NULL,
    role TEXT NOT NULL,
    invited_by TEXT NOT NULL,
    invited_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (consultation_channel, provider_id)
);
"""


@dataclass(frozen=True)
class Invitation:
    consultation_channel: str
    provider_id: str
    role: InvitedRole
    invited_by: str


class InvitationStore:
    def __init__(self, db: SqliteWorker) -> None:
        self._db = db

    async def save(self, invitation: Invitation) -> None:
        """Record ``invitation``; inviting the same provider again replaces its role."""

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO invitations (consultation_channel, provider_id, role, invited_by) "
                "VALUES (?, ?, ?, ?)",
                (
                    invitation.consultation_channel,
                    invitation.provider_id,
                    invitation.role,
                    invitation.invited_by,
                ),
            )

        await self._db.run(write)

    async def get(self, consultation_channel: str, provider_id: str) -> Invitation | None:
        row = await self._db.run(
            lambda db: db.execute(
                "SELECT role, invited_by FROM invitations WHERE consultation_channel = ? AND provider_id = ?",
                (consultation_channel, provider_id),
            ).fetchone()
        )
        if row is None:
            return None
        role, invited_by = row
        return Invitation(consultation_channel, provider_id, cast(InvitedRole, role), invited_by)

    async def remove(self, consultation_channel: str, provider_id: str) -> bool:
        """End the invitation; True if there was one."""

        def delete(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "DELETE FROM invitations WHERE consultation_channel = ? AND provider_id = ?",
                (consultation_channel, provider_id),
            )
            return cursor.rowcount == 1

        return await self._db.run(delete)
