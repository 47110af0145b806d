"""Pruning the audit store: delivered records past the retention leave the file, the chain stays checkable.

A record may go once the sink acknowledged it (its ``settled`` row for the sink, not a refusal,
whose MAC verifies; and at or below the sink's MACed highest sequence) and it is older than the
retention. Only a prefix goes: records 1 to P by position, never the chain's last record, and
only while each one still verifies and links to the one before. The chain then starts from an
**anchor**: P and the hash of record P (the ``prev_hash`` of record P + 1), kept in the
``pruned`` table and under the head's MAC (``ChainKeys.head`` covers it once P > 0). So after a
prune, without the device credential:

- record P + 1 must link to the anchor, and every record after it to the one before, as before;
- an anchor moved (to hide more records, or to take back a prune), altered or deleted fails the
  head's MAC, and so does a head reset to an unpruned chain;
- a record after the anchor deleted is a missing record, as before; the sink's acknowledgements,
  kept in the store and beside it, still show a store put back to an older copy.

What was pruned is at the sink, which holds it with no gap below the acknowledged sequence.

The first prune makes a version 3 store version 4 (the table, a delete trigger that lets only
the pruned prefix go, ``user_version = 4``), so an agent before this version refuses it naming
the version instead of calling its head moved back. Every function here runs on the store's
own thread (``AuditDatabase``) or read-only (``audit_verify``).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Protocol

from telehealth_client.protocol.messages import parse_time

UNPRUNED_SCHEMA_VERSION: Final = 3
PRUNED_SCHEMA_VERSION: Final = 4
# Records removed per transaction: the store's thread takes appends between two of them.
PRUNE_BATCH: Final = 2000

# Run inside the first prune's transaction (the trigger keeps its name: it is the same guard).
MAKE_PRUNABLE: Final = (
    "CREATE TABLE pruned ("
    " singleton INTEGER PRIMARY KEY CHECK (singleton = 1),"
    " through INTEGER NOT NULL CHECK (through > 0),"
    " anchor TEXT NOT NULL)",
    "DROP TRIGGER IF EXISTS records_no_delete",
    "CREATE TRIGGER records_no_delete BEFORE DELETE ON records"
    " WHEN OLD.position > coalesce((SELECT through FROM pruned WHERE singleton = 1), 0)"
    " BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END",
    f"PRAGMA user_version = {PRUNED_SCHEMA_VERSION}",
)


@dataclass(frozen=True)
class Anchor:
    """Where the stored chain starts: records up to ``through`` were pruned, ``hash`` was the last one's."""

    through: int
    hash: str


def anchor_text(anchor: Anchor | None) -> str:
    """What the head's MAC adds for ``anchor``: nothing for an unpruned store (its MAC is as before)."""
    if anchor is None or anchor.through == 0:
        return ""
    return f"\npruned\n{anchor.through}\n{anchor.hash}"


def read_anchor(db: sqlite3.Connection) -> Anchor | None:
    """The stored anchor; None when the store was never pruned (or its row was removed: the
    head's MAC then fails, as it covers the anchor)."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'pruned'").fetchone() is None:
        return None
    row = db.execute("SELECT through, anchor FROM pruned WHERE singleton = 1").fetchone()
    return None if row is None else Anchor(int(row[0]), str(row[1]))


def start_of(anchor: Anchor | None, genesis: str) -> tuple[int, str]:
    """The first stored record's position and the hash it must link to."""
    return (1, genesis) if anchor is None else (anchor.through + 1, anchor.hash)


def recorded_at(event: str) -> datetime | None:
    """The event's own ``timestamp``; None when it has none that reads as a UTC time."""
    try:
        data = json.loads(event)
        return parse_time(data["timestamp"]) if isinstance(data, dict) else None
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


class PruneKeys(Protocol):
    def verifies_link(self, prev_hash: str, position: int, event: str, stored: str) -> bool: ...

    def verifies_settlement(
        self, record_hash: str, target: str, refused_status: int | None, stored: str
    ) -> bool: ...


@dataclass(frozen=True)
class PrunePlan:
    """How far the next prune goes (``anchor``), and ``held``: why it stops at record ``held_at``
    for a reason that waiting will not cure (a refusal, a record or mark that does not verify);
    None when it stopped at a young record, one still waiting, or the end."""

    anchor: Anchor
    held_at: int | None = None
    held: str | None = None


def plan_prune(
    db: sqlite3.Connection, keys: PruneKeys, anchor: Anchor, *, up_to: int, before: datetime, limit: int
) -> PrunePlan:
    """The longest run after ``anchor`` (at most ``limit`` records, none past ``up_to``) of records
    that verify, link on, were acknowledged by the sink (a verified mark) and were recorded
    before ``before``."""
    rows = db.execute(
        "SELECT r.position, r.event, r.prev_hash, r.hash, s.refused_status, s.mac FROM records AS r"
        " LEFT JOIN settled AS s ON s.position = r.position AND s.target = 'sink'"
        " WHERE r.position > ? AND r.position <= ? ORDER BY r.position LIMIT ?",
        (anchor.through, up_to, limit),
    )
    through, last = anchor.through, anchor.hash
    for position, event, prev_hash, stored, refused, mac in rows:
        held: str | None = None
        links = position == through + 1 and prev_hash == last
        if not links or not keys.verifies_link(prev_hash, position, event, stored):
            held = "it does not verify (`telehealth-agent audit verify` names the problem)"
        elif mac is None:
            break  # still waiting for the sink: the backlog says how long
        elif refused is not None:
            held = f"the sink refused it (status {refused}); it is kept, never pruned undelivered"
        elif not keys.verifies_settlement(stored, "sink", None, mac):
            held = "its delivery state (sink) does not verify"
        if held is not None:
            return PrunePlan(Anchor(through, last), position, held)
        at = recorded_at(event)
        if at is None or at >= before:
            break
        through, last = position, stored
    return PrunePlan(Anchor(through, last))


def prune_to(db: sqlite3.Connection, old: Anchor | None, new: Anchor) -> tuple[int, int]:
    """Remove the records up to ``new.through`` and their delivery marks, in the caller's
    transaction (the caller then rewrites the head's MAC); how many of them never reached the
    audit channel, and how many the channel refused (the sink acknowledged all of them)."""
    if old is None:
        for statement in MAKE_PRUNABLE:
            db.execute(statement)
    db.execute(
        "INSERT OR REPLACE INTO pruned (singleton, through, anchor) VALUES (1, ?, ?)", (new.through, new.hash)
    )
    since = 0 if old is None else old.through
    (unpublished,) = db.execute(
        "SELECT count(*) FROM records AS r WHERE r.position > ? AND r.position <= ? AND NOT EXISTS"
        " (SELECT 1 FROM settled AS s WHERE s.position = r.position AND s.target = 'channel')",
        (since, new.through),
    ).fetchone()
    (refused,) = db.execute(
        "SELECT count(*) FROM settled WHERE position > ? AND position <= ? AND target = 'channel'"
        " AND refused_status IS NOT NULL",
        (since, new.through),
    ).fetchone()
    db.execute("DELETE FROM settled WHERE position <= ?", (new.through,))
    db.execute("DELETE FROM records WHERE position <= ?", (new.through,))
    return int(unpublished), int(refused)


@dataclass(frozen=True)
class Backlog:
    """What the sink has not acknowledged (waiting, or refused): records, their size in bytes,
    and when the oldest of them was recorded (None: none, or no readable time)."""

    records: int = 0
    bytes: int = 0
    oldest: datetime | None = None


def read_backlog(db: sqlite3.Connection) -> Backlog:
    records, size, first = db.execute(
        "SELECT count(*), coalesce(sum(length(CAST(r.event AS BLOB))), 0), min(r.position) FROM records AS r"
        " WHERE NOT EXISTS (SELECT 1 FROM settled AS s WHERE s.position = r.position"
        " AND s.target = 'sink' AND s.refused_status IS NULL)"
    ).fetchone()
    if not records:
        return Backlog()
    row = db.execute("SELECT event FROM records WHERE position = ?", (first,)).fetchone()
    return Backlog(int(records), int(size), None if row is None else recorded_at(str(row[0])))
