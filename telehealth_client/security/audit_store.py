"""The audit trail's SQLite file: an append-only hash chain and what is still to be delivered.

``records`` holds one row per event, in order, each carrying the hash of the one before it
(``hash = sha256(prev_hash \\n position \\n event)``, the first ``prev_hash`` being ``GENESIS_HASH``).
Triggers refuse UPDATE and DELETE there. ``head`` keeps the chain's length and last hash, so
removing the last record(s) is detected too. ``delivery`` (separate, so ``records`` stays
append-only) lists each record not yet acknowledged by the sink or the channel, or refused.

All writes run on one thread (``AuditDatabase``) with ``synchronous=FULL``: a committed record
is on disk. ``verify_chain`` and ``read_status`` open the file read-only, for the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal, TypeVar

T = TypeVar("T")

Target = Literal["sink", "channel"]
TARGETS: Final[tuple[Target, ...]] = ("sink", "channel")
GENESIS_HASH: Final = hashlib.sha256(b"telehealth-client audit chain v1").hexdigest()

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS records (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TABLE IF NOT EXISTS head (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    records INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT OR IGNORE INTO head (singleton, records, hash) VALUES (1, 0, '{genesis}');
CREATE TABLE IF NOT EXISTS delivery (
    position INTEGER NOT NULL,
    target TEXT NOT NULL CHECK (target IN ('sink', 'channel')),
    refused_status INTEGER,
    PRIMARY KEY (position, target)
) WITHOUT ROWID;
""".replace("{genesis}", GENESIS_HASH)


def store_path(state_dir: Path) -> Path:
    return state_dir / "audit" / "audit.sqlite3"


def chain_hash(prev_hash: str, position: int, event: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{position}\n{event}".encode()).hexdigest()


class AuditStoreError(Exception):
    """The audit store is missing or is not one (the command line's usage error)."""


@dataclass(frozen=True)
class AuditStatus:
    """How many records the chain holds and how many still wait for, or were refused by, each target."""

    records: int
    awaiting_sink: int
    awaiting_channel: int
    refused_sink: int = 0
    refused_channel: int = 0


@dataclass(frozen=True)
class ChainReport:
    """``ok``, or the first broken link: its position (1-based) and why (never the record's content).

    ``records``: how many records were verified intact, from the first (all of them when ``ok``).
    """

    ok: bool
    records: int
    first_broken: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Appended:
    position: int
    hash: str


class DuplicateIdError(ValueError):
    def __init__(self, position: int) -> None:
        super().__init__(f"id: already recorded (record {position})")
        self.position = position


# -- the writer ------------------------------------------------------------------------------------


class AuditDatabase:
    """One connection, owned by one thread; every call runs there, in the order made."""

    """``on_change`` is called on the worker's thread after each commit that changed the status."""

    def __init__(self, path: Path, on_change: Callable[[], None] | None = None) -> None:
        self.path = path
        self._on_change = on_change
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None
        # The chain's head as committed; read and written on the worker thread only.
        self._count = 0
        self._last_hash = GENESIS_HASH
        # As committed: written on the worker thread only, replaced whole (readers see one or the other).
        self._status = AuditStatus(0, 0, 0)

    @property
    def status(self) -> AuditStatus:
        return self._status

    async def open(self) -> AuditStatus:
        if self._executor is not None:
            raise RuntimeError("the audit store is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-sqlite")
        try:
            return await self._run(self._open)
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
            executor.shutdown(wait=True)  # idle now: returns at once

    async def append(self, batch: Sequence[tuple[str, str]]) -> list[Appended | DuplicateIdError]:
        """Append ``(id, canonical event)`` pairs in order, in one transaction (one fsync)."""
        return await self._run(lambda: self._append(batch))

    async def pending(self, target: Target, after: int, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` ``(position, event)`` after ``after`` not yet acknowledged by ``target``."""
        return await self._run(lambda: self._pending(target, after, limit))

    async def acknowledge(self, target: Target, position: int) -> None:
        await self._run(lambda: self._settle(target, position, None))

    async def refuse(self, target: Target, position: int, status: int) -> None:
        await self._run(lambda: self._settle(target, position, status))

    async def _run(self, job: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("the audit store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    # Everything below runs on the worker's thread.

    def _open(self) -> AuditStatus:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.parent.chmod(0o700)
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=True)
        try:
            self.path.chmod(0o600)
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a record reported as stored is on disk even if the power goes next.
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(SCHEMA)
            self._count, self._last_hash = db.execute("SELECT records, hash FROM head").fetchone()
            self._status = _status(db)
        except BaseException:
            db.close()
            raise
        self._db = db
        return self._status

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the audit store is not open")
        return self._db

    def _append(self, batch: Sequence[tuple[str, str]]) -> list[Appended | DuplicateIdError]:
        db = self._connection()
        count, last_hash = self._count, self._last_hash
        results: list[Appended | DuplicateIdError] = []
        taken: dict[str, int] = {}
        db.execute("BEGIN IMMEDIATE")
        try:
            for event_id, event in batch:
                earlier = taken.get(event_id)
                if earlier is None:
                    row = db.execute("SELECT position FROM records WHERE id = ?", (event_id,)).fetchone()
                    earlier = None if row is None else int(row[0])
                if earlier is not None:
                    results.append(DuplicateIdError(earlier))
                    continue
                prev_hash = last_hash
                count += 1
                last_hash = chain_hash(prev_hash, count, event)
                db.execute(
                    "INSERT INTO records (position, id, event, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
                    (count, event_id, event, prev_hash, last_hash),
                )
                db.executemany(
                    "INSERT INTO delivery (position, target) VALUES (?, ?)",
                    [(count, target) for target in TARGETS],
                )
                taken[event_id] = count
                results.append(Appended(count, last_hash))
            db.execute("UPDATE head SET records = ?, hash = ?", (count, last_hash))
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        added = count - self._count
        self._count, self._last_hash = count, last_hash
        if added:
            status = self._status
            self._changed(
                replace(
                    status,
                    records=count,
                    awaiting_sink=status.awaiting_sink + added,
                    awaiting_channel=status.awaiting_channel + added,
                )
            )
        return results

    def _pending(self, target: Target, after: int, limit: int) -> list[tuple[int, str]]:
        rows = (
            self._connection()
            .execute(
                "SELECT d.position, r.event FROM delivery AS d JOIN records AS r USING (position)"
                " WHERE d.target = ? AND d.refused_status IS NULL AND d.position > ?"
                " ORDER BY d.position LIMIT ?",
                (target, after, limit),
            )
            .fetchall()
        )
        return [(int(position), str(event)) for position, event in rows]

    def _settle(self, target: Target, position: int, refused_status: int | None) -> None:
        """Acknowledged (the row goes) or refused (kept, marked); a second call changes nothing."""
        db = self._connection()
        if refused_status is None:
            cursor = db.execute("DELETE FROM delivery WHERE position = ? AND target = ?", (position, target))
        else:
            cursor = db.execute(
                "UPDATE delivery SET refused_status = ?"
                " WHERE position = ? AND target = ? AND refused_status IS NULL",
                (refused_status, position, target),
            )
        if cursor.rowcount != 1:
            return
        status = self._status
        refused = refused_status is not None
        if target == "sink":
            status = replace(
                status, awaiting_sink=status.awaiting_sink - 1, refused_sink=status.refused_sink + refused
            )
        else:
            status = replace(
                status,
                awaiting_channel=status.awaiting_channel - 1,
                refused_channel=status.refused_channel + refused,
            )
        self._changed(status)

    def _changed(self, status: AuditStatus) -> None:
        self._status = status
        if self._on_change is not None:
            self._on_change()


# -- read-only: status and verification ------------------------------------------------------------


def _status(db: sqlite3.Connection) -> AuditStatus:
    (records,) = db.execute("SELECT records FROM head").fetchone()
    counts = {
        (str(target), refused): int(count)
        for target, refused, count in db.execute(
            "SELECT target, refused_status IS NOT NULL, count(*) FROM delivery GROUP BY 1, 2"
        )
    }
    return AuditStatus(
        records=int(records),
        awaiting_sink=counts.get(("sink", 0), 0),
        awaiting_channel=counts.get(("channel", 0), 0),
        refused_sink=counts.get(("sink", 1), 0),
        refused_channel=counts.get(("channel", 1), 0),
    )


def _open_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise AuditStoreError(f"{path}: no audit store there")
    try:
        return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AuditStoreError(f"{path}: cannot be opened ({type(exc).__name__})") from None


def _read(path: Path, query: Callable[[sqlite3.Connection], T]) -> T:
    db = _open_read_only(path)
    try:
        return query(db)
    except sqlite3.DatabaseError as exc:
        raise AuditStoreError(f"{path}: not a readable audit store ({type(exc).__name__})") from None
    finally:
        db.close()


def read_store_status(path: Path) -> AuditStatus:
    return _read(path, _status)


def verify_store(path: Path) -> ChainReport:
    return _read(path, _verify)


def _event_id(event: str) -> object:
    try:
        data = json.loads(event)
    except ValueError:
        return None
    return data.get("id") if isinstance(data, dict) else None


def _verify(db: sqlite3.Connection) -> ChainReport:
    head = db.execute("SELECT records, hash FROM head").fetchone()
    expected, prev = 1, GENESIS_HASH
    rows = db.execute("SELECT position, id, event, prev_hash, hash FROM records ORDER BY position")
    for position, event_id, event, prev_hash, stored_hash in rows:
        if position != expected:
            return _broken(
                expected, f"missing (the chain goes from record {expected - 1} to record {position})"
            )
        if chain_hash(prev_hash, position, event) != stored_hash or _event_id(event) != event_id:
            return _broken(position, "content does not match its hash")
        if prev_hash != prev:
            return _broken(position, "previous record missing or altered")
        expected, prev = expected + 1, stored_hash
    count = expected - 1
    if head is None:
        return _broken(count + 1, "the chain's head is missing")
    head_records, head_hash = int(head[0]), str(head[1])
    if head_records > count:
        return _broken(count + 1, f"the last record(s) were removed ({head_records - count} missing)")
    if head_records < count or head_hash != prev:
        return _broken(count, "does not match the chain's head")
    return ChainReport(ok=True, records=count)


def _broken(position: int, why: str) -> ChainReport:
    return ChainReport(
        ok=False, records=position - 1, first_broken=position, reason=f"record {position}: {why}"
    )
