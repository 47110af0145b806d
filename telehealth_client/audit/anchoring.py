"""A store begun without knowing the sink's head, and placing it after that head at first contact.

A kiosk first started with its clinic down (or refusing its credential) begins its store at the
sequence its state directory knows, often 0, while the sink may already hold this device's
earlier records (a re-imaged kiosk keeping its device credential). Such a store is marked
``unanchored``: a one-row table whose presence the head's MAC covers (``keys.head_text``), so
nobody without the key can mark an anchored store (to have a rollback re-chained instead of
refused) or unmark one.

At first contact (``rechain``), in the caller's transaction: the records written offline, none of
them delivered (delivery waits for the anchoring), get the sequences after the sink's head, each
event and link rewritten under the chain's key; the mark goes. The caller rewrites the head.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Final, Protocol

UNANCHORED_SCHEMA: Final = """
CREATE TABLE unanchored (singleton INTEGER PRIMARY KEY CHECK (singleton = 1));
INSERT INTO unanchored (singleton) VALUES (1);
"""
# Made again as SCHEMA makes it once the rewrite is done: append-only again.
_NO_UPDATE: Final = (
    "CREATE TRIGGER records_no_update BEFORE UPDATE ON records"
    " BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END"
)


class LinkKeys(Protocol):
    def link(self, prev_hash: str, position: int, event: str) -> str: ...


class RechainError(Exception):
    """The records cannot be placed after the sink's head; ``problem`` says why (no content)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class Rechained:
    """The records' new hashes by position and the chain's new last hash."""

    hashes: dict[int, str]
    last_hash: str


def is_unanchored(db: sqlite3.Connection) -> bool:
    """Whether the store carries the mark (the head's MAC says whether it should)."""
    table = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'unanchored'").fetchone()
    return table is not None and db.execute("SELECT 1 FROM unanchored").fetchone() is not None


def mark_unanchored(db: sqlite3.Connection) -> None:
    """In the creating transaction."""
    for statement in UNANCHORED_SCHEMA.strip().split(";\n"):
        if statement.strip():
            db.execute(statement)


def rechain(
    db: sqlite3.Connection,
    keys: LinkKeys,
    *,
    device_id: str,
    new_base: int,
    genesis: str,
    trusted: dict[int, str],
) -> Rechained:
    """Rewrite every record with the sequence ``new_base + position`` and the links that follow,
    and drop the mark, in the caller's transaction. ``trusted``: each record's hash as the chain
    verified at start or this agent appended it: one changed on disk since is not laundered."""
    (settled,) = db.execute("SELECT count(*) FROM settled").fetchone()
    if settled:
        raise RechainError(
            f"{settled} delivery outcomes are recorded for records written before the sink's head was known"
        )
    rows = db.execute("SELECT position, event, hash FROM records ORDER BY position").fetchall()
    hashes: dict[int, str] = {}
    last_hash = genesis
    for expected, (position, event, stored) in enumerate(rows, start=1):
        if position != expected or trusted.get(position) != stored:
            raise RechainError(f"record {position} changed on disk since the chain verified at start")
        data = json.loads(event)
        if not isinstance(data, dict) or data.get("deviceId") != device_id:
            raise RechainError(f"record {position} is not this device's")
        data["sequence"] = new_base + position
        rewritten = json.dumps(data, sort_keys=True, separators=(",", ":"))
        new_hash = keys.link(last_hash, position, rewritten)
        hashes[position] = new_hash
        # The triggers keep records append-only; dropped and made again inside this transaction.
        if position == 1:
            db.execute("DROP TRIGGER records_no_update")
        db.execute(
            "UPDATE records SET event = ?, prev_hash = ?, hash = ? WHERE position = ?",
            (rewritten, last_hash, new_hash, position),
        )
        last_hash = new_hash
    if rows:
        db.execute(_NO_UPDATE)
    db.execute("DROP TABLE unanchored")
    return Rechained(hashes, last_hash)
