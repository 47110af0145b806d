"""The audit trail's SQLite file (version 3, 4 once pruned): the device's keyed hash chain and its delivery.

``records`` holds one row per event, in order, each carrying the hash of the one before it:
``hash = HMAC(link key, prev_hash \\n position \\n event)``, the first ``prev_hash`` being
``GENESIS_HASH``. Every event carries the device's ``deviceId`` and its ``sequence``, which is
``base + position``: ``base`` is what the sink already held for this device when the store began
(0 for a new device; a store begun after a damaged one was moved aside continues from the sink's
head, so no sequence is used twice). Triggers refuse UPDATE and DELETE there.

``head`` states whose chain it is, its base, its length and its last hash, under a MAC
(``ChainKeys.head``) that also covers ``origin`` (``audit_origin``: the version 2 store set aside
when this one began, and whether it follows a removed store): moving it back, resetting it to an
empty chain or putting another device's store in place is detected without the sink. The MAC also
covers whether the store was begun without knowing the sink's head (``audit_anchoring``), until
``anchor`` places it after that head.
``acknowledged`` keeps the highest sequence the sink acknowledged (MACed); ``audit_acks`` keeps
the same beside the store. ``settled`` (separate, so ``records`` stays append-only) has one row
per record and target once the target acknowledged or refused it, with a MAC binding it to that
record: a record with no such row is waiting, so losing rows means sending again, never losing an
event. The keys (``audit_keys.ChainKeys``) come from the device credential. The schema's version
is the file's ``user_version``: 3, or 4 once delivered records were pruned (``audit_pruning``:
the stored chain then starts from an anchor the head's MAC covers); version 2 (keyed by the
cipher key) is ``audit_legacy``'s, any other is refused.

All writes run on one thread (``AuditDatabase``) with ``synchronous=FULL``: a committed record
is on disk. ``audit_verify`` reads the file read-only, for the command line.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TypeVar

from telehealth_client.audit.anchoring import RechainError, is_unanchored, mark_unanchored, rechain
from telehealth_client.audit.keys import ChainKeys
from telehealth_client.audit.origin import (
    NO_ORIGIN,
    ORIGIN_SCHEMA,
    StoreOrigin,
    insert_origin,
    read_origin,
)
from telehealth_client.audit.pruning import (
    PRUNE_BATCH,
    PRUNED_SCHEMA_VERSION,
    UNPRUNED_SCHEMA_VERSION,
    Anchor,
    Backlog,
    PrunePlan,
    plan_prune,
    prune_to,
    read_anchor,
    read_backlog,
    start_of,
)
from telehealth_client.durable.one_thread import OneThread
from telehealth_client.durable.sqlite import (
    SqliteDurability,
    bound_log,
    compact,
    read_durability,
    start_incremental,
)

T = TypeVar("T")

Target = Literal["sink", "channel"]
TARGETS: Final[tuple[Target, ...]] = ("sink", "channel")
SCHEMA_VERSION: Final = UNPRUNED_SCHEMA_VERSION  # what a new store is made as
STORE_VERSIONS: Final = (UNPRUNED_SCHEMA_VERSION, PRUNED_SCHEMA_VERSION)
LEGACY_SCHEMA_VERSION: Final = 2
GENESIS_HASH: Final = hashlib.sha256(b"telehealth-client audit chain v3").hexdigest()
TABLES: Final = ("records", "head", "settled", "acknowledged", "origin")
DAMAGED_ADVICE: Final = (
    "move it aside to start a new one (it continues from the sink's head); "
    "`telehealth-agent audit verify` tells what is wrong"
)
KEY_ADVICE: Final = (
    "after a device credential rotation, list the old credential in previous_device_credentials; "
    "otherwise " + DAMAGED_ADVICE
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
    device_id TEXT NOT NULL,
    base INTEGER NOT NULL,
    records INTEGER NOT NULL,
    hash TEXT NOT NULL,
    mac TEXT NOT NULL
);
CREATE TABLE settled (
    position INTEGER NOT NULL,
    target TEXT NOT NULL CHECK (target IN ('sink', 'channel')),
    refused_status INTEGER,
    mac TEXT NOT NULL,
    PRIMARY KEY (position, target)
) WITHOUT ROWID;
CREATE TABLE acknowledged (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    highest_sequence INTEGER NOT NULL,
    mac TEXT NOT NULL
);
{origin}
PRAGMA user_version = {version};
""".replace("{version}", str(SCHEMA_VERSION)).replace("{origin}", ORIGIN_SCHEMA)


def store_path(state_dir: Path) -> Path:
    return Path(state_dir) / "audit" / "audit.sqlite3"


class AuditStoreError(Exception):
    """The audit store is missing or cannot be opened (the command line's usage error)."""


class DamagedStoreError(AuditStoreError):
    """A file is there but it is not a readable, consistent audit store of this device.

    ``problem`` says what, ``advice`` what to do; neither holds a record's content.
    """

    def __init__(self, path: Path, problem: str, advice: str = DAMAGED_ADVICE) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
        self.advice = advice


@dataclass(frozen=True)
class AuditStatus:
    """How many records the chain holds and how many still wait for, or were refused by, each target.

    ``base``: the sequence before the first record's; ``acknowledged``: the highest sequence the
    sink acknowledged (as kept in the store); ``pruned``: the records (from the first) delivered
    and removed from the file, counted in ``records`` (the chain's length).
    """

    records: int
    awaiting_sink: int
    awaiting_channel: int
    refused_sink: int = 0
    refused_channel: int = 0
    base: int = 0
    acknowledged: int = 0
    pruned: int = 0


@dataclass(frozen=True)
class LastRecord:
    """The chain's last record: its position and when it was recorded (to compare with the sink)."""

    position: int
    timestamp: str | None


@dataclass(frozen=True)
class Appended:
    position: int
    sequence: int
    hash: str


@dataclass(frozen=True)
class Pruned:
    """One prune: how many records left the file, how many of them the audit channel never got
    (the sink holds them all), and the plan (where it stopped, and why when waiting will not cure it)."""

    records: int
    unpublished: int
    plan: PrunePlan


class DuplicateIdError(ValueError):
    def __init__(self, position: int) -> None:
        super().__init__(f"id: already recorded (record {position})")
        self.position = position


def store_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def store_problem(db: sqlite3.Connection, version: int, tables: Sequence[str]) -> str | None:
    """Why this open file is not an audit store of ``version`` (None if it is one)."""
    found = store_version(db)
    if found != version:
        return (
            f"audit store version {found}, this agent reads version {version} "
            "(written by another version of the agent, or altered)"
        )
    return missing_table_problem(db, tables)


def device_keyed_problem(db: sqlite3.Connection) -> str | None:
    """Why this open file is not a device-keyed store, pruned (version 4) or not (3)."""
    found = store_version(db)
    if found not in STORE_VERSIONS:
        return (
            f"audit store version {found}, this agent reads versions {UNPRUNED_SCHEMA_VERSION} and "
            f"{PRUNED_SCHEMA_VERSION} (written by another version of the agent, or altered)"
        )
    return missing_table_problem(db, TABLES + (("pruned",) if found == PRUNED_SCHEMA_VERSION else ()))


def missing_table_problem(db: sqlite3.Connection, tables: Sequence[str]) -> str | None:
    present = {str(name) for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    missing = [table for table in tables if table not in present]
    if missing:
        return f"not a readable audit store (table {missing[0]} missing)"
    return None


def rollback_problem(trail_end: int, kept_in_store: int, kept_in_file: int, file_name: str) -> str | None:
    """What the sink's acknowledgements say about a trail ending at sequence ``trail_end``.

    The store is written before the file, so an untouched store is never behind the file.
    """
    acknowledged = max(kept_in_store, kept_in_file)
    if acknowledged > trail_end:
        return (
            f"the trail ends at sequence {trail_end} but the sink already acknowledged sequence "
            f"{acknowledged}: its last records were removed, or an older copy of the store was put back"
        )
    if kept_in_file > kept_in_store:
        return (
            f"the store says the sink acknowledged up to sequence {kept_in_store}, {file_name} says "
            f"{kept_in_file}: an older copy of the store was put back (records made since are lost)"
        )
    return None


def event_field(event: str, name: str) -> object:
    try:
        data = json.loads(event)
    except ValueError:
        return None
    return data.get(name) if isinstance(data, dict) else None


# -- shared by the version 3 and version 2 stores ------------------------------------------------------


class SettlementKeys(Protocol):
    def settlement(self, record_hash: str, target: str, refused_status: int | None) -> str: ...


class StoreKeys(SettlementKeys, Protocol):
    def verifies_link(self, prev_hash: str, position: int, event: str, stored: str) -> bool: ...


@dataclass(frozen=True)
class PendingRecord:
    """A record waiting for a target, as read just now; ``verified``: its content is what the chain
    verified at start (or this agent appended) under the store's keys. One that is not must never
    be sent."""

    position: int
    event: str
    verified: bool


def pending_rows(
    db: sqlite3.Connection, target: Target, after: int, limit: int
) -> list[tuple[int, str, str, str]]:
    """``(position, event, prev_hash, hash)`` of up to ``limit`` records after ``after`` not settled
    with ``target``, in order."""
    rows = db.execute(
        "SELECT r.position, r.event, r.prev_hash, r.hash FROM records AS r WHERE r.position > ? AND NOT"
        " EXISTS (SELECT 1 FROM settled AS s WHERE s.position = r.position AND s.target = ?)"
        " ORDER BY r.position LIMIT ?",
        (after, target, limit),
    ).fetchall()
    return [(int(position), str(event), str(prev), str(stored)) for position, event, prev, stored in rows]


def unsettled_hashes(db: sqlite3.Connection) -> dict[int, str]:
    """The hash of every record some target has not settled (read once the chain verified)."""
    rows = db.execute(
        "SELECT r.position, r.hash FROM records AS r"
        " WHERE (SELECT count(*) FROM settled AS s WHERE s.position = r.position) < ?",
        (len(TARGETS),),
    )
    return {int(position): str(stored) for position, stored in rows}


def settled_everywhere(db: sqlite3.Connection, position: int) -> bool:
    (count,) = db.execute("SELECT count(*) FROM settled WHERE position = ?", (position,)).fetchone()
    return int(count) >= len(TARGETS)


def insert_settlement(
    db: sqlite3.Connection, keys: SettlementKeys, target: Target, position: int, refused_status: int | None
) -> bool:
    """A row for the record and target; False if the record does not exist or was settled already."""
    row = db.execute("SELECT hash FROM records WHERE position = ?", (position,)).fetchone()
    if row is None:
        return False
    mac = keys.settlement(str(row[0]), target, refused_status)
    cursor = db.execute(
        "INSERT OR IGNORE INTO settled (position, target, refused_status, mac) VALUES (?, ?, ?, ?)",
        (position, target, refused_status, mac),
    )
    return cursor.rowcount == 1


def settled_status(status: AuditStatus, target: Target, refused: bool) -> AuditStatus:
    """``status`` after one more record was settled with ``target``."""
    if target == "sink":
        return replace(
            status, awaiting_sink=status.awaiting_sink - 1, refused_sink=status.refused_sink + refused
        )
    return replace(
        status, awaiting_channel=status.awaiting_channel - 1, refused_channel=status.refused_channel + refused
    )


def delivery_counts(db: sqlite3.Connection) -> dict[str, int]:
    """Counts from the records themselves: a record with no settled row for a target waits for it."""
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
    return counts


class StoreWorker:
    """One connection, owned by one thread; every call runs there, in the order made.

    ``on_change`` is called on the worker's thread after each commit that changed the status.
    """

    def __init__(self, path: Path, keys: StoreKeys, on_change: Callable[[], None] | None = None) -> None:
        self.path = path
        self._store_keys = keys
        self._on_change = on_change
        # The hash each record not yet settled everywhere had when the whole chain verified at
        # start (set by the subclass) or when this agent appended it; worker thread only.
        # Delivery sends a record only if its content, read right before, still links to it.
        self._trusted: dict[int, str] = {}
        self._thread = OneThread("audit store")
        self._db: sqlite3.Connection | None = None
        # As committed: written on the worker thread only, replaced whole (readers see one or the other).
        self._status = AuditStatus(0, 0, 0)

    @property
    def status(self) -> AuditStatus:
        return self._status

    async def _start(self, prepare: Callable[[sqlite3.Connection], None]) -> AuditStatus:
        self._thread.start()
        try:
            return await self._run(lambda: self._open(prepare))
        except BaseException:
            await self._thread.stop()
            raise

    async def close(self) -> None:
        await self._thread.stop(self._close)

    async def pending(self, target: Target, after: int, limit: int) -> list[PendingRecord]:
        """Up to ``limit`` records after ``after`` not yet settled with ``target``, each checked
        against the chain as it verified at start."""
        return await self._run(lambda: self._pending(target, after, limit))

    async def durability(self) -> SqliteDurability:
        """The journal mode and ``synchronous`` level of the connection that writes the records."""
        return await self._run(lambda: read_durability(self._connection()))

    async def _run(self, job: Callable[[], T]) -> T:
        return await self._thread.run(job)

    # Everything below runs on the worker's thread.

    def _pending(self, target: Target, after: int, limit: int) -> list[PendingRecord]:
        rows = pending_rows(self._connection(), target, after, limit)
        return [
            PendingRecord(position, event, self._verifies(position, event, prev_hash, stored))
            for position, event, prev_hash, stored in rows
        ]

    def _verifies(self, position: int, event: str, prev_hash: str, stored: str) -> bool:
        trusted = self._trusted.get(position)
        return (
            trusted is not None
            and stored == trusted
            and self._store_keys.verifies_link(prev_hash, position, event, trusted)
        )

    def _settled(self, db: sqlite3.Connection, position: int) -> None:
        if settled_everywhere(db, position):
            self._trusted.pop(position, None)

    def _open(self, prepare: Callable[[sqlite3.Connection], None]) -> AuditStatus:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.parent.chmod(0o700)
        with contextlib.suppress(FileNotFoundError):
            # A FIFO or a device would block SQLite's first read forever.
            if not stat.S_ISREG(os.stat(self.path).st_mode):
                raise AuditStoreError(f"{self.path}: not a regular file (replaced by something else)")
        try:
            db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise AuditStoreError(f"{self.path}: cannot be opened ({type(exc).__name__})") from None
        try:
            self.path.chmod(0o600)
            prepare(db)
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

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the audit store is not open")
        return self._db

    def _changed(self, status: AuditStatus) -> None:
        self._status = status
        if self._on_change is not None:
            self._on_change()

    def _transaction(self, job: Callable[[sqlite3.Connection], T]) -> T:
        db = self._connection()
        db.execute("BEGIN IMMEDIATE")
        try:
            result = job(db)
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return result


def use_durable_settings(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA journal_mode=WAL")
    # FULL: a record reported as stored is on disk even if the power goes next.
    db.execute("PRAGMA synchronous=FULL")
    bound_log(db)


def is_fresh(db: sqlite3.Connection) -> bool:
    """No table and no version yet: a file this agent may create its schema in."""
    return db.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,) and store_version(db) == 0


StoreKind = Literal["none", "version 2", "store"]


def store_kind(path: Path) -> StoreKind:
    """What is at ``path``, read without changing it: ``none`` (no file, or an empty one the agent
    would create its store in), a ``version 2`` store, or a ``store`` (anything else: opening it
    tells whether it is a whole version 3 store)."""
    if not path.exists():
        return "none"
    if not path.is_file():
        return "store"
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return "store"
    try:
        if is_fresh(db):
            return "none"
        return "version 2" if store_version(db) == LEGACY_SCHEMA_VERSION else "store"
    except sqlite3.DatabaseError:
        return "store"
    finally:
        db.close()


# -- the writer (version 3) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreHead:
    device_id: str
    base: int
    records: int
    hash: str
    mac: str
    origin: StoreOrigin | None  # None: its row is missing
    anchor: Anchor | None = None  # None: never pruned
    unanchored: bool = False  # begun without knowing the sink's head, not yet placed after it

    @property
    def start(self) -> tuple[int, str]:
        """The first stored record's position and the hash it links to."""
        return start_of(self.anchor, GENESIS_HASH)


def read_head(db: sqlite3.Connection) -> StoreHead | None:
    row = db.execute("SELECT device_id, base, records, hash, mac FROM head").fetchone()
    if row is None:
        return None
    return StoreHead(
        str(row[0]),
        int(row[1]),
        int(row[2]),
        str(row[3]),
        str(row[4]),
        read_origin(db),
        read_anchor(db),
        is_unanchored(db),
    )


def read_kept_acknowledgement(db: sqlite3.Connection) -> tuple[int, str] | None:
    row = db.execute("SELECT highest_sequence, mac FROM acknowledged").fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def head_problem(
    db: sqlite3.Connection, head: StoreHead | None, keys: ChainKeys, device_id: str
) -> str | None:
    """Why the head cannot be trusted for ``device_id`` (None when its MAC verifies)."""
    if head is None:
        return "not a readable audit store (the chain's head is missing)"
    if head.device_id != device_id:
        return (
            f"the store is device {head.device_id}'s, not this device's ({device_id}): either another "
            "device's store was put here, or user_id is not this device's ID"
        )
    if head.origin is None:
        return "not a readable audit store (its record of how it began is missing)"
    if not keys.verifies_head(
        head.device_id,
        head.base,
        head.records,
        head.hash,
        head.mac,
        head.origin,
        head.anchor,
        head.unanchored,
    ):
        if written_with_other_keys(db, head, keys):
            return (
                f"the chain's head (it says {_records(head.records)}) does not verify under this device's "
                "credential, and neither do its first record nor its record of the sink's "
                "acknowledgements: device_credential is not the credential that wrote this store "
                "(a wrong one, or rotated without listing the old one in previous_device_credentials), "
                "or the whole store was rewritten without it"
            )
        return (
            f"the chain's head (it says {_records(head.records)}) does not verify under this device's "
            "credential: it was moved back, reset or rewritten by someone without the key"
        )
    return None


def _records(count: int) -> str:
    return f"{count} record{'' if count == 1 else 's'}"


def written_with_other_keys(db: sqlite3.Connection, head: StoreHead, keys: ChainKeys) -> bool:
    """Neither the first record nor the kept acknowledgement verifies under ``keys``: the keys are
    likely not the ones that wrote the store (a head moved back by someone without the key leaves
    both verifying)."""
    kept = read_kept_acknowledgement(db)
    if kept is not None and keys.verifies_acknowledgement(head.device_id, kept[0], kept[1]):
        return False
    position, _ = head.start
    first = db.execute(
        "SELECT prev_hash, event, hash FROM records WHERE position = ?", (position,)
    ).fetchone()
    return first is None or not keys.verifies_link(str(first[0]), position, str(first[1]), str(first[2]))


def acknowledgement_problem(kept: tuple[int, str] | None, keys: ChainKeys, device_id: str) -> str | None:
    if kept is None:
        return "not a readable audit store (its record of the sink's acknowledgements is missing)"
    if not keys.verifies_acknowledgement(device_id, kept[0], kept[1]):
        return "its record of the sink's acknowledgements was altered (its MAC does not verify)"
    return None


class AuditDatabase(StoreWorker):
    """The version 3 store of device ``device_id``, keyed with ``keys``."""

    def __init__(
        self, path: Path, keys: ChainKeys, device_id: str, on_change: Callable[[], None] | None = None
    ) -> None:
        super().__init__(path, keys, on_change)
        self._keys = keys
        self.device_id = device_id
        # The chain's head as committed; read and written on the worker thread only.
        self._base = 0
        self._count = 0
        self._last_hash = GENESIS_HASH
        self._acknowledged = 0
        self._origin = NO_ORIGIN
        self._anchor: Anchor | None = None
        self._unanchored = False

    @property
    def origin(self) -> StoreOrigin:
        """How the open store began (as its authenticated head says)."""
        return self._origin

    @property
    def unanchored(self) -> bool:
        """Begun without knowing the sink's head and not yet placed after it (``anchor``)."""
        return self._unanchored

    async def open(
        self,
        *,
        base_if_new: int = 0,
        acknowledged_elsewhere: int = 0,
        file_name: str = "",
        origin_if_new: StoreOrigin = NO_ORIGIN,
        unanchored_if_new: bool = False,
    ) -> AuditStatus:
        """Open the store, or create it continuing from sequence ``base_if_new`` with ``origin_if_new``
        (``unanchored_if_new``: the sink's head is not known; ``anchor`` places it after that head).

        DamagedStoreError naming the file if it is not a store this device can append to
        (unreadable, a table missing, another version, another device's, a head or a last
        record that does not verify under these keys, or acknowledgements that say it was rolled
        back: ``acknowledged_elsewhere`` is what the file beside it, ``file_name``, keeps);
        AuditStoreError if it cannot be opened.
        """
        return await self._start(
            lambda db: self._prepare(
                db, base_if_new, acknowledged_elsewhere, file_name, origin_if_new, unanchored_if_new
            )
        )

    async def anchor(self, held: int) -> int:
        """Place an unanchored store after the sink's head ``held`` (the highest sequence it holds
        of this device), in one transaction: with records, each gets its sequence after ``held``
        (new events, new links) when ``held`` is past the store's base; the mark goes. How many
        records were re-chained. DamagedStoreError if they cannot be (one changed on disk, or
        delivered already)."""
        return await self._run(lambda: self._anchor_after(held))

    async def append(self, batch: Sequence[tuple[str, dict[str, Any]]]) -> list[Appended | DuplicateIdError]:
        """Append ``(id, wire event)`` pairs in order, in one transaction (one fsync); each event
        gets this device's ``deviceId`` and its ``sequence``."""
        return await self._run(lambda: self._append(batch))

    async def acknowledge(
        self, target: Target, position: int, highest_sequence: int | None = None
    ) -> int | None:
        """Record ``target``'s acknowledgement of ``position``; with the sink's ``highest_sequence``
        also that. The new highest acknowledged sequence when it rose, else None."""
        return await self._run(lambda: self._settle(target, position, None, highest_sequence))

    async def refuse(self, target: Target, position: int, status: int) -> None:
        await self._run(lambda: self._settle(target, position, status, None))

    async def keep_acknowledged(self, highest_sequence: int) -> int | None:
        """Keep the sink's ``highest_sequence`` (heard without a delivery); as ``acknowledge``."""
        return await self._run(lambda: self._settle(None, 0, None, highest_sequence))

    async def prune(self, before: datetime, limit: int = PRUNE_BATCH) -> Pruned:
        """Remove up to ``limit`` of the first records that the sink acknowledged and that were
        recorded before ``before`` (``audit_pruning``), in one transaction; never the last record."""
        return await self._run(lambda: self._prune(before, limit))

    async def compact(self) -> None:
        """Give freed pages back to the disk and empty the write-ahead log (``durable_sqlite``)."""
        await self._run(lambda: compact(self._connection()))

    async def backlog(self) -> Backlog:
        """What the sink has not acknowledged: records, bytes, the oldest one's time."""
        return await self._run(lambda: read_backlog(self._connection()))

    # Everything below runs on the worker's thread.

    def _prepare(
        self,
        db: sqlite3.Connection,
        base_if_new: int,
        elsewhere: int,
        file_name: str,
        origin: StoreOrigin,
        unanchored: bool,
    ) -> None:
        if is_fresh(db):
            start_incremental(db)  # before the journal mode: SQLite takes it only on an empty file
            db.execute("PRAGMA journal_mode=WAL")
            self._create(db, base_if_new, origin, unanchored)
        problem = device_keyed_problem(db)
        if problem is not None:
            raise DamagedStoreError(self.path, problem)
        use_durable_settings(db)
        head = read_head(db)
        problem = head_problem(db, head, self._keys, self.device_id)
        if problem is not None:
            ours = head is not None and head.device_id == self.device_id
            raise DamagedStoreError(self.path, problem, KEY_ADVICE if ours else DAMAGED_ADVICE)
        assert head is not None and head.origin is not None
        if head.records:
            last = db.execute(
                "SELECT prev_hash, event, hash FROM records WHERE position = ?", (head.records,)
            ).fetchone()
            if (
                last is None
                or last[2] != head.hash
                or not self._keys.verifies_link(last[0], head.records, last[1], last[2])
            ):
                # Appending under a key that does not verify the chain so far would bury the problem.
                raise DamagedStoreError(
                    self.path,
                    "its last record does not match the chain's head under this device's key",
                    KEY_ADVICE,
                )
        kept = read_kept_acknowledgement(db)
        problem = acknowledgement_problem(kept, self._keys, self.device_id)
        if problem is None and kept is not None:
            problem = rollback_problem(head.base + head.records, kept[0], elsewhere, file_name)
        if problem is not None:
            raise DamagedStoreError(self.path, problem)
        assert kept is not None
        # Every record, not only the last: a record added, removed or edited without the key
        # anywhere in the chain stops the start, so nothing that does not verify is delivered.
        from telehealth_client.audit.verify import records_problem  # it imports this module

        unsettled = unsettled_hashes(db)
        broken = records_problem(
            db, self._keys, self.device_id, head, fields_at=unsettled, at_sink=kept[0] - head.base
        )
        if broken is not None:
            raise DamagedStoreError(self.path, broken.reason or "the chain does not verify")
        self._trusted = unsettled
        self._base, self._count, self._last_hash, self._acknowledged, self._origin, self._anchor = (
            head.base,
            head.records,
            head.hash,
            kept[0],
            head.origin,
            head.anchor,
        )
        self._unanchored = head.unanchored
        self._status = AuditStatus(
            records=head.records,
            base=head.base,
            acknowledged=kept[0],
            pruned=self._pruned,
            **delivery_counts(db),
        )

    @property
    def _pruned(self) -> int:
        return 0 if self._anchor is None else self._anchor.through

    def _prune(self, before: datetime, limit: int) -> Pruned:
        db = self._connection()
        start = self._anchor or Anchor(0, GENESIS_HASH)
        # The last record stays (the head's end is a stored record); nothing past the sink's head.
        up_to = min(self._count - 1, self._acknowledged - self._base)
        plan = plan_prune(db, self._keys, start, up_to=up_to, before=before, limit=limit)
        new = plan.anchor
        if new.through == start.through:
            return Pruned(0, 0, plan)
        old = self._anchor

        def write(db: sqlite3.Connection) -> tuple[int, int]:
            counts = prune_to(db, old, new)
            mac = self._keys.head(
                self.device_id, self._base, self._count, self._last_hash, self._origin, new, self._unanchored
            )
            db.execute("UPDATE head SET mac = ?", (mac,))
            return counts

        unpublished, channel_refused = self._transaction(write)
        self._anchor = new
        for position in [p for p in self._trusted if p <= new.through]:
            del self._trusted[position]
        # Every record pruned was acknowledged by the sink: only the channel's counts change.
        status = self._status
        self._changed(
            replace(
                status,
                pruned=new.through,
                awaiting_channel=status.awaiting_channel - unpublished,
                refused_channel=status.refused_channel - channel_refused,
            )
        )
        return Pruned(new.through - start.through, unpublished, plan)

    def _create(self, db: sqlite3.Connection, base: int, origin: StoreOrigin, unanchored: bool) -> None:
        db.executescript(SCHEMA)  # opens the transaction the rows below join
        try:
            insert_origin(db, origin)
            if unanchored:
                mark_unanchored(db)
            db.execute(
                "INSERT INTO head (singleton, device_id, base, records, hash, mac) VALUES (1, ?, ?, 0, ?, ?)",
                (
                    self.device_id,
                    base,
                    GENESIS_HASH,
                    self._keys.head(self.device_id, base, 0, GENESIS_HASH, origin, None, unanchored),
                ),
            )
            db.execute(
                "INSERT INTO acknowledged (singleton, highest_sequence, mac) VALUES (1, ?, ?)",
                (base, self._keys.acknowledgement(self.device_id, base)),
            )
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise

    def _append(self, batch: Sequence[tuple[str, dict[str, Any]]]) -> list[Appended | DuplicateIdError]:
        count, last_hash = self._count, self._last_hash
        results: list[Appended | DuplicateIdError] = []

        def write(db: sqlite3.Connection) -> None:
            nonlocal count, last_hash
            taken: dict[str, int] = {}
            for event_id, wire in batch:
                earlier = taken.get(event_id)
                if earlier is None:
                    row = db.execute("SELECT position FROM records WHERE id = ?", (event_id,)).fetchone()
                    earlier = None if row is None else int(row[0])
                if earlier is not None:
                    results.append(DuplicateIdError(earlier))
                    continue
                prev_hash = last_hash
                count += 1
                sequence = self._base + count
                event = json.dumps(
                    {**wire, "deviceId": self.device_id, "sequence": sequence},
                    sort_keys=True,
                    separators=(",", ":"),
                )
                last_hash = self._keys.link(prev_hash, count, event)
                db.execute(
                    "INSERT INTO records (position, id, event, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
                    (count, event_id, event, prev_hash, last_hash),
                )
                taken[event_id] = count
                results.append(Appended(count, sequence, last_hash))
                self._trusted[count] = last_hash
            mac = self._keys.head(
                self.device_id, self._base, count, last_hash, self._origin, self._anchor, self._unanchored
            )
            db.execute("UPDATE head SET records = ?, hash = ?, mac = ?", (count, last_hash, mac))

        self._transaction(write)
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

    def _settle(
        self, target: Target | None, position: int, refused_status: int | None, highest_sequence: int | None
    ) -> int | None:
        """Acknowledged or refused: a row for the record and target (a second call changes nothing),
        and the sink's highest sequence if it rose; both in one transaction."""
        raised = (
            highest_sequence
            if highest_sequence is not None and highest_sequence > self._acknowledged
            else None
        )

        def write(db: sqlite3.Connection) -> bool:
            settled = target is not None and insert_settlement(
                db, self._keys, target, position, refused_status
            )
            if settled:
                self._settled(db, position)
            if raised is not None:
                db.execute(
                    "UPDATE acknowledged SET highest_sequence = ?, mac = ?",
                    (raised, self._keys.acknowledgement(self.device_id, raised)),
                )
            return settled

        settled = self._transaction(write)
        if raised is not None:
            self._acknowledged = raised
        if settled or raised is not None:
            status = self._status
            if settled and target is not None:
                status = settled_status(status, target, refused_status is not None)
            self._changed(replace(status, acknowledged=self._acknowledged))
        return raised

    def _anchor_after(self, held: int) -> int:
        if not self._unanchored:
            return 0
        if self._anchor is not None:
            # Pruning needs the sink's acknowledgements, which an unanchored store never has.
            raise DamagedStoreError(self.path, "a store begun without the sink's head says it was pruned")
        base = max(self._base, held)
        moved = self._count if base != self._base else 0

        def write(db: sqlite3.Connection) -> tuple[str, dict[int, str]]:
            if moved:
                done = rechain(
                    db,
                    self._keys,
                    device_id=self.device_id,
                    new_base=base,
                    genesis=GENESIS_HASH,
                    trusted=self._trusted,
                )
                last_hash, hashes = done.last_hash, done.hashes
            else:
                db.execute("DROP TABLE unanchored")
                last_hash, hashes = self._last_hash, {}
            mac = self._keys.head(self.device_id, base, self._count, last_hash, self._origin, None, False)
            db.execute("UPDATE head SET base = ?, hash = ?, mac = ?", (base, last_hash, mac))
            if base > self._acknowledged:
                # As a store begun knowing the head: the sink holds everything up to its base.
                db.execute(
                    "UPDATE acknowledged SET highest_sequence = ?, mac = ?",
                    (base, self._keys.acknowledgement(self.device_id, base)),
                )
            return last_hash, hashes

        try:
            last_hash, hashes = self._transaction(write)
        except RechainError as exc:
            raise DamagedStoreError(
                self.path, f"cannot be placed after the sink's head: {exc.problem}"
            ) from None
        self._base, self._last_hash, self._unanchored = base, last_hash, False
        self._trusted.update(hashes)
        self._acknowledged = max(self._acknowledged, base)
        self._changed(replace(self._status, base=base, acknowledged=self._acknowledged))
        return moved
