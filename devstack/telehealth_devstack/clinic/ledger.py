"""Which tokens the clinic granted, to whom, for which consultation: what revoke-access needs.

Written through to SQLite before a grant is answered, so revoke-access after a clinic
restart still finds (and revokes) what was issued before it, as a real token server must.
Reads come from memory: the ledger is loaded once when the clinic starts.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from ..grants import ROLES, Role
from .sqlite_worker import SqliteWorker

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS issued_tokens (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL,
    consultation_channel TEXT NOT NULL,
    expires_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class IssuedToken:
    """``consultation_channel`` is "" for a standing token (it names no consultation)."""

    token: str
    user_id: str
    role: Role
    consultation_channel: str
    expires_at: float


class TokenLedger:
    """Expired tokens are dropped as new ones arrive; ``load()`` before use."""

    def __init__(self, db: SqliteWorker, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._issued: list[IssuedToken] = []

    async def load(self) -> None:
        """Read the unexpired tokens issued before (by an earlier run on the same state)."""
        now = self._clock()
        rows = await self._db.run(
            lambda db: db.execute(
                "SELECT token, user_id, role, consultation_channel, expires_at FROM issued_tokens "
                "WHERE expires_at > ? ORDER BY rowid",
                (now,),
            ).fetchall()
        )
        self._issued = [
            IssuedToken(token, user_id, cast(Role, role), channel, float(expires_at))
            for token, user_id, role, channel, expires_at in rows
            if role in ROLES
        ]

    async def record(
        self, token: str, user_id: str, role: Role, consultation_channel: str | None, ttl_minutes: int
    ) -> None:
        now = self._clock()
        entry = IssuedToken(token, user_id, role, consultation_channel or "", now + ttl_minutes * 60)

        def write(db: sqlite3.Connection) -> None:
            with db:  # one transaction: the connection is in autocommit mode otherwise
                db.execute("BEGIN")
                db.execute("DELETE FROM issued_tokens WHERE expires_at <= ?", (now,))
                db.execute(
                    "INSERT OR REPLACE INTO issued_tokens VALUES (?, ?, ?, ?, ?)",
                    (entry.token, entry.user_id, entry.role, entry.consultation_channel, entry.expires_at),
                )

        await self._db.run(write)
        self._issued = [issued for issued in self._issued if issued.expires_at > now]
        self._issued.append(entry)

    def live_tokens(self, user_id: str, consultation_channel: str) -> list[IssuedToken]:
        """Unexpired tokens granted to ``user_id`` for ``consultation_channel``."""
        now = self._clock()
        return [
            entry
            for entry in self._issued
            if entry.user_id == user_id
            and entry.consultation_channel == consultation_channel
            and entry.expires_at > now
        ]

    async def forget(self, entries: Iterable[IssuedToken]) -> None:
        gone = {entry.token for entry in entries}

        def delete(db: sqlite3.Connection) -> None:
            with db:
                db.execute("BEGIN")
                db.executemany("DELETE FROM issued_tokens WHERE token = ?", [(token,) for token in gone])

        await self._db.run(delete)
        self._issued = [entry for entry in self._issued if entry.token not in gone]
