"""What the relay keeps across a restart, in SQLite in its state directory.

Revoked tokens, stored messages (history) and App Context UUID metadata: what PubNub's own
services keep when one of their servers restarts. Presence, pending long-polls and the short
catch-up queue are not kept, as they are not in PubNub either.

The in-memory structures stay the source of every answer; this module writes through to one
SQLite connection (WAL, ``synchronous=NORMAL``: a commit is a write to the log, not an fsync)
and reads everything back once, when a relay starts on the directory. The bounds are kept by
the in-memory structures, which tell this module what they evict.
"""

from __future__ import annotations

import json
import pathlib
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from .store import StoredMessage

DATABASE_NAME = "relay.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS revoked_tokens (
    signature BLOB PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    channel TEXT NOT NULL,
    timetoken INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (channel, timetoken)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uuid_metadata (
    uuid TEXT PRIMARY KEY,
    entry TEXT NOT NULL,
    position INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything read back from a state directory, oldest first."""

    revoked: list[bytes]
    messages: list[StoredMessage]
    uuid_metadata: list[tuple[str, dict[str, Any]]]


@dataclass(slots=True)
class StateFiles:
    """One SQLite connection to ``state_dir/relay.sqlite3``; open with ``open`` (blocking: use a thread)."""

    connection: sqlite3.Connection
    _position: int = field(default=0)

    @classmethod
    def open(cls, state_dir: pathlib.Path) -> StateFiles:
        state_dir.mkdir(parents=True, exist_ok=True)
        # Opened in a worker thread, used on the event loop afterwards: one user at a time.
        connection = sqlite3.connect(state_dir / DATABASE_NAME, check_same_thread=False, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
        except BaseException:
            connection.close()
            raise
        return cls(connection)

    def load(self, now: float) -> Snapshot:
        """Everything kept, and drops revocations of tokens that have expired since (blocking)."""
        db = self.connection
        db.execute("DELETE FROM revoked_tokens WHERE expires_at <= ?", (now,))
        revoked = [bytes(row[0]) for row in db.execute("SELECT signature FROM revoked_tokens")]
        messages = [
            _message(channel, timetoken, body)
            for channel, timetoken, body in db.execute(
                "SELECT channel, timetoken, body FROM messages ORDER BY timetoken"
            )
        ]
        metadata = [
            (uuid, json.loads(entry))
            for uuid, entry in db.execute("SELECT uuid, entry FROM uuid_metadata ORDER BY position")
        ]
        row = db.execute("SELECT COALESCE(MAX(position), 0) FROM uuid_metadata").fetchone()
        self._position = int(row[0])
        return Snapshot(revoked, messages, metadata)

    def close(self) -> None:
        self.connection.close()

    # -- writes, each one statement in autocommit ----------------------------------------------

    def add_revoked(self, signature: bytes, expires_at: float) -> None:
        self.connection.execute(
            "INSERT OR REPLACE INTO revoked_tokens (signature, expires_at) VALUES (?, ?)",
            (signature, expires_at),
        )

    def add_message(self, message: StoredMessage, evicted: StoredMessage | None) -> None:
        db = self.connection
        db.execute(
            "INSERT OR REPLACE INTO messages (channel, timetoken, body) VALUES (?, ?, ?)",
            (message.channel, message.timetoken, _message_body(message)),
        )
        if evicted is not None:
            db.execute(
                "DELETE FROM messages WHERE channel = ? AND timetoken = ?",
                (evicted.channel, evicted.timetoken),
            )

    def drop_channel(self, channel: str) -> None:
        self.connection.execute("DELETE FROM messages WHERE channel = ?", (channel,))

    def delete_messages(self, channel: str, timetokens: list[int]) -> None:
        self.connection.executemany(
            "DELETE FROM messages WHERE channel = ? AND timetoken = ?", [(channel, t) for t in timetokens]
        )

    def put_uuid(self, uuid: str, entry: dict[str, Any]) -> None:
        self._position += 1
        self.connection.execute(
            "INSERT OR REPLACE INTO uuid_metadata (uuid, entry, position) VALUES (?, ?, ?)",
            (uuid, json.dumps(entry), self._position),
        )

    def remove_uuid(self, uuid: str) -> None:
        self.connection.execute("DELETE FROM uuid_metadata WHERE uuid = ?", (uuid,))


def _message_body(message: StoredMessage) -> str:
    return json.dumps(
        {
            "payload": message.payload,
            "publisher": message.publisher,
            "meta": message.meta,
            "type": message.message_type,
            "custom_type": message.custom_message_type,
        },
        separators=(",", ":"),
    )


def _message(channel: str, timetoken: int, body: str) -> StoredMessage:
    data = json.loads(body)
    return StoredMessage(
        channel=channel,
        timetoken=timetoken,
        payload=data["payload"],
        publisher=data["publisher"],
        meta=data["meta"],
        message_type=data["type"],
        custom_message_type=data["custom_type"],
        stored=True,
    )
