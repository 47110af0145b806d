"""The audit trail's SQLite file: an append-only keyed hash chain and what has been delivered.

``records`` holds one row per event, in order, each carrying the hash of the one before it:
``hash = HMAC-SHA256(key, prev_hash \\n position \\n event)``, the first ``prev_hash`` being
``GENESIS_HASH``. The key (``ChainKeys``) is derived from the agent's cipher key, so nobody
without it can edit a record and recompute the chain, or swap in a fresh one. Triggers refuse
UPDATE and DELETE there. ``head`` keeps the chain's length and last hash, so removing the last
record(s) is detected too. ``settled`` (separate, so ``records`` stays append-only) has one row
per record and target once the target acknowledged or refused it, with a MAC binding it to that
record: a record with no such row is waiting, so losing rows means sending again, never losing
an event. The schema's version is the file's ``user_version``; any other version is refused.

All writes run on one thread (``AuditDatabase``) with ``synchronous=FULL``: a committed record
is on disk. ``verify_store`` and ``read_store_status`` open the file read-only, for the command line.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Literal, TypeVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from telehealth_client.sqlite_durability import SqliteDurability, read_durability

T = TypeVar("T")

Target = Literal["sink", "channel"]
TARGETS: Final[tuple[Target, ...]] = ("sink", "channel")
SCHEMA_VERSION: Final = 2
GENESIS_HASH: Final = hashlib.sha256(b"telehealth-client audit chain v2").hexdigest()
TABLES: Final = ("records", "head", "settled")
_KEY_SALT: Final = b"telehealth-client audit chain"
_KEY_PURPOSE: Final = b"audit chain hmac v2"
DAMAGED_ADVICE: Final = (
    "move it aside to start a new one; `telehealth-agent audit verify` tells what is wrong"
)

SCHEMA: Final = """
BEGIN;
CREATE TABLE records (
    position INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE TRIGGER records_no_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TRIGGER records_no_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
CREATE TABLE head (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    records INTEGER NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO head (singleton, records, hash) VALUES (1, 0, '{genesis}');
CREATE TABLE settled (
    position INTEGER NOT NULL,
    target TEXT NOT NULL CHECK (target IN ('sink', 'channel')),
    refused_status INTEGER,
    mac TEXT NOT NULL,
    PRIMARY KEY (position, target)
) WITHOUT ROWID;
PRAGMA user_version = {version};
COMMIT;
""".replace("{genesis}", GENESIS_HASH).replace("{version}", str(SCHEMA_VERSION))


def store_path(state_dir: Path) -> Path:
    return state_dir / "audit" / "audit.sqlite3"


def _derive(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_KEY_SALT, info=_KEY_PURPOSE).derive(
        secret.encode("utf-8")
    )


def _check_secret(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{field}: must not be empty")
    return value


class ChainKeys:
    """The chain's HMAC keys, derived from the agent's cipher key: the current one signs, and
    keys rotated out (``previous``) still verify what they signed. Keeps derived keys only."""

    def __init__(self, secret: str, previous: Sequence[str] = ()) -> None:
        if isinstance(previous, str):
            raise ValueError("previous: must be a sequence of secrets, not one string")
        self._current = _derive(_check_secret(secret, "secret"))
        self._previous = tuple(
            _derive(_check_secret(old, f"previous[{index}]")) for index, old in enumerate(previous)
        )

    def __repr__(self) -> str:
        return f"ChainKeys(previous_keys={len(self._previous)})"

    def link(self, prev_hash: str, position: int, event: str) -> str:
        """A record's hash under the current key."""
        return _mac(self._current, f"{prev_hash}\n{position}\n{event}")

    def settlement(self, record_hash: str, target: Target, refused_status: int | None) -> str:
        """The MAC binding a delivery outcome to its record."""
        return _mac(self._current, _settlement_text(record_hash, target, refused_status))

    def verifies_link(self, prev_hash: str, position: int, event: str, stored: str) -> bool:
        return self._verifies(f"{prev_hash}\n{position}\n{event}", stored)

    def verifies_settlement(
        self, record_hash: str, target: str, refused_status: int | None, stored: str
    ) -> bool:
        return self._verifies(_settlement_text(record_hash, target, refused_status), stored)

    def _verifies(self, text: str, stored: str) -> bool:
        return any(hmac.compare_digest(_mac(key, text), stored) for key in (self._current, *self._previous))


def _mac(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _settlement_text(record_hash: str, target: str, refused_status: int | None) -> str:
    return f"settled\n{record_hash}\n{target}\n{'' if refused_status is None else refused_status}"


class AuditStoreError(Exception):
    """The audit store is missing or cannot be opened (the command line's usage error)."""


class DamagedStoreError(AuditStoreError):
    """A file is there but it is not a readable, consistent audit store of this version.

    ``problem`` says what, ``advice`` what to do; neither holds a record's content.
    """

    def __init__(self, path: Path, problem: str, advice: str = DAMAGED_ADVICE) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.advice = advice


@dataclass(frozen=True)
class AuditStatus:
    """How many records the chain holds and how many still wait for, or were refused by, each target."""

    records: int
    awaiting_sink: int
    awaiting_channel: int
    refused_sink: int = 0
    refused_channel: int = 0


@dataclass(frozen=True)
class LastRecord:
    """The chain's last record: its position and when it was recorded (to compare with the sink)."""

    position: int
    timestamp: str | None


@dataclass(frozen=True)
class ChainReport:
    """``ok``, or the first broken link: its position (1-based) and why (never the record's content).

    ``records``: how many records were verified intact, from the first (all of them when ``ok``).
    ``first_broken`` is None when the store as a whole is unreadable or of another version.
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


def _store_problem(db: sqlite3.Connection) -> str | None:
    """Why this open file is not an audit store of this version (None if it is one)."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version != SCHEMA_VERSION:
        return (
            f"audit store version {version}, this agent reads version {SCHEMA_VERSION} "
            "(written by another version of the agent, or altered)"
        )
    present = {str(name) for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [table for table in TABLES if table not in present]
    if missing:
        return f"not a readable audit store (table {missing[0]} missing)"
    return None


# -- the writer ------------------------------------------------------------------------------------


class AuditDatabase:
    """One connection, owned by one thread; every call runs there, in the order made.

    ``on_change`` is called on the worker's thread after each commit that changed the status.
    """

    def __init__(self, path: Path, keys: ChainKeys, on_change: Callable[[], None] | None = None) -> None:
        self.path = path
        self._keys = keys
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
        """Open (or create) the store. DamagedStoreError naming the file if it is not one this
        agent can append to (unreadable, a table missing, another version, or a head that does
        not match its last record under these keys); AuditStoreError if it cannot be opened."""
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
        """Up to ``limit`` ``(position, event)`` after ``after`` not yet settled with ``target``."""
        return await self._run(lambda: self._pending(target, after, limit))

    async def acknowledge(self, target: Target, position: int) -> None:
        await self._run(lambda: self._settle(target, position, None))

    async def refuse(self, target: Target, position: int, status: int) -> None:
        await self._run(lambda: self._settle(target, position, status))

    async def durability(self) -> SqliteDurability:
        """The journal mode and ``synchronous`` level of the connection that writes the records."""
        return await self._run(lambda: read_durability(self._connection()))

    async def _run(self, job: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("the audit store is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, job)

    # Everything below runs on the worker's thread.

    def _open(self) -> AuditStatus:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.parent.chmod(0o700)
        try:
            db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise AuditStoreError(f"{self.path}: cannot be opened ({type(exc).__name__})") from None
        try:
            self.path.chmod(0o600)
            self._prepare(db)
        except sqlite3.OperationalError as exc:
            db.close()
            # Locked, read-only, out of space: the file may be fine, the place is not.
            raise AuditStoreError(
                f"{self.path}: cannot be opened for writing ({type(exc).__name__})"
            ) from None
        except sqlite3.DatabaseError as exc:
            db.close()
            raise DamagedStoreError(self.path, f"not a readable audit store ({type(exc).__name__})") from None
        except BaseException:
            db.close()
            raise
        self._db = db
        return self._status

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Create the schema in a new file, or check an existing one and read its head."""
        fresh = db.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
        if fresh and db.execute("PRAGMA user_version").fetchone() == (0,):
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(SCHEMA)
        problem = _store_problem(db)
        if problem is not None:
            raise DamagedStoreError(self.path, problem)
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a record reported as stored is on disk even if the power goes next.
        db.execute("PRAGMA synchronous=FULL")
        head = db.execute("SELECT records, hash FROM head").fetchone()
        if head is None:
            raise DamagedStoreError(self.path, "not a readable audit store (the chain's head is missing)")
        count, last_hash = int(head[0]), str(head[1])
        if count:
            last = db.execute(
                "SELECT prev_hash, event, hash FROM records WHERE position = ?", (count,)
            ).fetchone()
            if (
                last is None
                or last[2] != last_hash
                or not self._keys.verifies_link(last[0], count, last[1], last[2])
            ):
                # Appending under a key that does not verify the chain so far would bury the problem.
                raise DamagedStoreError(
                    self.path,
                    "its last record does not match the chain's head under this agent's cipher key",
                    "after a cipher key rotation, list the old key in previous_cipher_keys; otherwise "
                    + DAMAGED_ADVICE,
                )
        self._count, self._last_hash = count, last_hash
        self._status = _status(db)

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
                last_hash = self._keys.link(prev_hash, count, event)
                db.execute(
                    "INSERT INTO records (position, id, event, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
                    (count, event_id, event, prev_hash, last_hash),
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
                "SELECT r.position, r.event FROM records AS r WHERE r.position > ? AND NOT EXISTS"
                " (SELECT 1 FROM settled AS s WHERE s.position = r.position AND s.target = ?)"
                " ORDER BY r.position LIMIT ?",
                (after, target, limit),
            )
            .fetchall()
        )
        return [(int(position), str(event)) for position, event in rows]

    def _settle(self, target: Target, position: int, refused_status: int | None) -> None:
        """Acknowledged or refused: a row for the record and target; a second call changes nothing."""
        db = self._connection()
        row = db.execute("SELECT hash FROM records WHERE position = ?", (position,)).fetchone()
        if row is None:
            return
        mac = self._keys.settlement(str(row[0]), target, refused_status)
        cursor = db.execute(
            "INSERT OR IGNORE INTO settled (position, target, refused_status, mac) VALUES (?, ?, ?, ?)",
            (position, target, refused_status, mac),
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
    """Counts from the records themselves: a record with no settled row for a target waits for it."""
    (records,) = db.execute("SELECT records FROM head").fetchone()
    counts: dict[str, int] = {}
    for target in TARGETS:
        (waiting,) = db.execute(
            "SELECT count(*) FROM records AS r WHERE NOT EXISTS"
            " (SELECT 1 FROM settled AS s WHERE s.position = r.position AND s.target = ?)",
            (target,),
        ).fetchone()
        (refused,) = db.execute(
            "SELECT count(*) FROM settled AS s JOIN records AS r USING (position)"
            " WHERE s.target = ? AND s.refused_status IS NOT NULL",
            (target,),
        ).fetchone()
        counts[f"awaiting_{target}"], counts[f"refused_{target}"] = int(waiting), int(refused)
    return AuditStatus(records=int(records), **counts)


def _open_read_only(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise AuditStoreError(f"{path}: no audit store there")
    if not path.is_file():
        raise AuditStoreError(f"{path}: not a file")
    try:
        return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AuditStoreError(f"{path}: cannot be opened ({type(exc).__name__})") from None


def _read_status(path: Path, db: sqlite3.Connection) -> AuditStatus:
    problem = _store_problem(db)
    if problem is not None:
        raise DamagedStoreError(path, problem)
    return _status(db)


def read_store_status(path: Path) -> AuditStatus:
    """The counts; AuditStoreError if there is no store, DamagedStoreError if it is not one."""
    db = _open_read_only(path)
    try:
        return _read_status(path, db)
    except sqlite3.DatabaseError as exc:
        raise DamagedStoreError(path, f"not a readable audit store ({type(exc).__name__})") from None
    finally:
        db.close()


def read_last_record(path: Path) -> LastRecord | None:
    """The last record's position and timestamp (None for an empty chain)."""
    db = _open_read_only(path)
    try:
        problem = _store_problem(db)
        if problem is not None:
            raise DamagedStoreError(path, problem)
        row = db.execute("SELECT position, event FROM records ORDER BY position DESC LIMIT 1").fetchone()
    except sqlite3.DatabaseError as exc:
        raise DamagedStoreError(path, f"not a readable audit store ({type(exc).__name__})") from None
    finally:
        db.close()
    if row is None:
        return None
    timestamp = _event_field(str(row[1]), "timestamp")
    return LastRecord(int(row[0]), timestamp if isinstance(timestamp, str) else None)


def verify_store(path: Path, keys: ChainKeys) -> ChainReport:
    """The chain checked under ``keys``; AuditStoreError only if there is no file to check.

    A file that is there but unreadable, of another version or missing a table is a broken chain.
    """
    db = _open_read_only(path)
    try:
        problem = _store_problem(db)
        if problem is not None:
            return ChainReport(ok=False, records=0, reason=problem)
        return _verify(db, keys)
    except sqlite3.DatabaseError as exc:
        return ChainReport(ok=False, records=0, reason=f"not a readable audit store ({type(exc).__name__})")
    finally:
        db.close()


def _event_field(event: str, name: str) -> object:
    try:
        data = json.loads(event)
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None


def _verify(db: sqlite3.Connection, keys: ChainKeys) -> ChainReport:
    head = db.execute("SELECT records, hash FROM head").fetchone()
    settled: dict[int, list[tuple[str, int | None, str]]] = {}
    for position, target, refused_status, mac in db.execute(
        "SELECT position, target, refused_status, mac FROM settled"
    ):
        settled.setdefault(int(position), []).append((str(target), refused_status, str(mac)))
    expected, prev = 1, GENESIS_HASH
    rows = db.execute("SELECT position, id, event, prev_hash, hash FROM records ORDER BY position")
    try:
        for position, event_id, event, prev_hash, stored_hash in rows:
            if position != expected:
                return _broken(
                    expected, f"missing (the chain goes from record {expected - 1} to record {position})"
                )
            if not keys.verifies_link(prev_hash, position, event, stored_hash) or (
                _event_field(event, "id") != event_id
            ):
                return _broken(position, "content does not match its hash")
            if prev_hash != prev:
                return _broken(position, "previous record missing or altered")
            for target, refused_status, mac in settled.pop(position, []):
                if not keys.verifies_settlement(stored_hash, target, refused_status, mac):
                    return _broken(position, f"its delivery state ({target}) was altered")
            expected, prev = expected + 1, stored_hash
    except sqlite3.DatabaseError as exc:
        return _broken(expected, f"unreadable ({type(exc).__name__})")
    count = expected - 1
    if head is None:
        return _broken(count + 1, "the chain's head is missing")
    head_records, head_hash = int(head[0]), str(head[1])
    if head_records > count:
        return _broken(count + 1, f"the last record(s) were removed ({head_records - count} missing)")
    if head_records < count or head_hash != prev:
        return _broken(count, "does not match the chain's head")
    if settled:
        return ChainReport(
            ok=False, records=count, reason=f"delivery state for record {min(settled)}, which does not exist"
        )
    return ChainReport(ok=True, records=count)


def _broken(position: int, why: str) -> ChainReport:
    return ChainReport(
        ok=False, records=position - 1, first_broken=position, reason=f"record {position}: {why}"
    )
