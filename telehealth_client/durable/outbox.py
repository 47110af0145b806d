"""The durable encrypted outbox: what this agent must publish, kept until it is delivered.

Chat messages, read receipts and emergency publishes are put here first. ``put`` returns once the
item is sealed (``durable.at_rest``) and fsync'ed in a SQLite file in the state directory; the
sender then publishes them, with the same ``id`` on every retry, and removes each from disk once
it is delivered or has finally failed.

Order, and what limits throughput. Receivers order a channel's messages by timetoken, which
PubNub assigns when a publish *reaches* it. Two publishes in flight at once on one channel may
reach it in either order (separate HTTP connections, served by any of the origin's servers, with
nothing to keep them in sequence), and once published a message cannot be moved. So each channel
is a **lane**: at most one of its items in flight, the next published only once the previous one
is sent (its timetoken known) or has finally failed. Lanes are independent: different
consultations, the emergency channel and each notification channel are in flight at once, up to
``max_in_flight`` publishes in all (the default, 10, drains at least 20 a second behind a 300 ms
round trip once seven or more channels have items). An item keeps its place among its channel's
items, on disk and across restarts.

The limit that follows, and that no sender can lift without changing the wire contract: one
channel delivers at most one item per round trip (about 3 a second behind 300 ms), so a burst of
chat in ONE consultation (chat and read receipts share its channel) drains at that rate. Sending
the next item before the previous one's answer (pipelining) would gain only by hoping it reaches
PubNub second: nothing orders requests on separate connections, and even where they arrive in
order a retry breaks it (the first publish fails with a 5xx or times out unlanded, the second
lands, the first's retry lands after it). The development relay cannot show the first kind of
race (one process on loopback, no jitter: 10 publishes at once on one channel landed in order in
20 of 20 rounds, with and without a 300 ms delay), which makes it no evidence for PubNub.
Batching several chat messages into one publish would change what a receiver shows (PROTOCOL.md:
each chat message is a message with its own id). Between channels there is no order: an on-call
notification may arrive before the escalation it names, which receivers allow for (a provider
alerts only once the escalation is on the emergency channel).

A lane that fails backs off on its own; the others go on. When the bus reports ``connected``
again every lane's back-off is cut short; so does ``flush(within)`` (a stop's last chance), which
then gives up as soon as every channel with items has failed again rather than wait ``within`` out.

Exactly once when possible: a publish whose outcome is unknown (timed out, connection lost after
the request went out) may have landed, and so may any item found on disk at start (the process
may have died between the publish and the deletion). Before such an item is published again, the
channel's history is read once for all of them; an item that is there, published by this user,
is done. Items published with ``store=False`` cannot be looked up: they are sent at least once.

On disk only IDs are in clear (id, consultation_id, kind); channel, message and meta are one
sealed blob whose associated data is those IDs, so a blob moved to another row does not open.
Deleted rows are zeroed (``secure_delete``) and ``wipe`` truncates the write-ahead log, so a
wiped consultation's blobs are gone from the file, not just unlinked.

Bounded on disk: what is sent leaves the file at once, and ``expire(before)`` (the agent's
retention, ``telehealth_client.retention``) ends, as failed with the reason ``expired``, what
waited since before then: a consultation's chat is no use after it (PROTOCOL.md: its PHI leaves
the disk when it ends) and no consultation lasts the retention. ``compact()`` gives the freed
pages back to the disk and ``backlog()`` says how much waits.

A row that cannot be opened (a mistyped cipher key, a damaged blob) is skipped, logged by id at
every open, and left in the file: a later start with the right key (or with it among the previous
ones) sends it. ``wipe`` deletes such rows of its consultation too. A file that is not a usable
outbox at all makes ``open`` raise ``OutboxFileError`` (path and reason) and is left unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

from telehealth_client.backoff import back_off_delay
from telehealth_client.durable.at_rest import Sealer, SealError
from telehealth_client.durable.one_thread import OneThread
from telehealth_client.durable.sqlite import (
    SqliteDurability,
    bound_log,
    compact,
    files_bytes,
    free_bytes,
    read_durability,
    start_incremental,
)
from telehealth_client.logs import describe_exception
from telehealth_client.pubsub.bus import AccessDeniedError, Bus, BusError, ConnectionStatus, StatusChange

log = logging.getLogger(__name__)

T = TypeVar("T")

# The local clock may run ahead of PubNub's: history is read from this much before an item was queued.
_CLOCK_SKEW_TIMETOKENS: Final = 300 * 10_000_000
_HISTORY_PAGE: Final = 100
# A history check reads at most this many pages; past them the items are published again.
_HISTORY_PAGES_MAX: Final = 50
# Publishes (or history checks) in flight at once, over all channels (one per channel at most).
DEFAULT_MAX_IN_FLIGHT: Final = 10
# Ids delivered or failed recently: put() of one of them again is a no-op, as for a pending id.
_RECENT_IDS: Final = 4096
# Refusals (403) of one item for which the denial handler is asked for a new token.
_DENIALS_ASKED: Final = 16
_ID_MAX_CHARS: Final = 128
_PENDING_COLUMNS: Final = frozenset({"seq", "id", "consultation_id", "kind", "sealed"})
# Why SQLite cannot use the file, by primary result code: words for the person on call.
_SQLITE_REASONS: Final = {
    "SQLITE_NOTADB": "not an SQLite database (damaged, or another kind of file)",
    "SQLITE_CORRUPT": "the SQLite database is damaged",
    "SQLITE_CANTOPEN": "cannot be opened",
    "SQLITE_PERM": "cannot be opened (permission denied)",
    "SQLITE_READONLY": "cannot be written (read-only)",
    "SQLITE_FULL": "the disk is full",
    "SQLITE_IOERR": "the disk could not be read or written",
    "SQLITE_BUSY": "another process holds it locked",
}

_SCHEMA: Final = """
PRAGMA secure_delete=ON;
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    consultation_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sealed BLOB NOT NULL
);
-- Rows an earlier version moved here when it could not open them; moved back at every open.
CREATE TABLE IF NOT EXISTS set_aside (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    consultation_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    reason TEXT NOT NULL,
    sealed BLOB NOT NULL
);
"""


class OutboxFileError(Exception):
    """The outbox file cannot be used (damaged, not an outbox, not openable): names the path and why.

    Never the file's content, so the message can be shown to the person on call as it is.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Outgoing:
    """One publish to make. ``message`` is the wire payload: it holds PHI and is only stored sealed."""

    id: str  # the message's own id (uuid4), chosen before the first attempt
    consultation_id: str  # what it belongs to (wiped with it); "" for none
    channel: str
    message: dict[str, Any]
    meta: dict[str, Any] | None = None
    store: bool = True
    kind: str = "chat"  # chat, chat-read, emergency, notification...: for the owner's routing


SentCallback = Callable[[Outgoing, int], None]
FailedCallback = Callable[[Outgoing, str], None]
DenialHandler = Callable[[AccessDeniedError], Awaitable[bool]]


def _text_field(value: object, name: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be a string, got {type(value).__name__}")
    if not value and not empty:
        raise ValueError(f"{name}: must not be empty")
    if len(value) > _ID_MAX_CHARS:
        raise ValueError(f"{name}: must be at most {_ID_MAX_CHARS} characters, got {len(value)}")
    if not value.isascii() or not value.isprintable():
        raise ValueError(f"{name}: must be printable ASCII")
    return value


def _json_field(value: object, name: str) -> str:
    try:
        return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError):
        raise ValueError(f"{name}: must be JSON-serialisable (no NaN or infinity)") from None


def _valid_id(value: object) -> str | None:
    try:
        return _text_field(value, "id")
    except ValueError:
        return None


def _file_reason(exc: OSError | sqlite3.Error) -> str:
    if isinstance(exc, OSError):
        return f"cannot be opened ({type(exc).__name__})"
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    primary = "_".join(name.split("_")[:2])  # SQLITE_IOERR_SHORT_READ -> SQLITE_IOERR
    return _SQLITE_REASONS.get(primary, f"SQLite cannot use it ({name})")


def _payload(item: Outgoing, queued_at: int) -> bytes:
    """The sealed part of a row; ValueError naming the field when the item cannot be stored."""
    _text_field(item.id, "id")
    _text_field(item.consultation_id, "consultation_id", empty=True)
    _text_field(item.kind, "kind")
    _text_field(item.channel, "channel")
    if not isinstance(item.message, dict):
        raise ValueError(f"message: must be a dict, got {type(item.message).__name__}")
    if item.meta is not None and not isinstance(item.meta, dict):
        raise ValueError(f"meta: must be a dict or None, got {type(item.meta).__name__}")
    if not isinstance(item.store, bool):
        raise ValueError(f"store: must be a bool, got {type(item.store).__name__}")
    message, meta = _json_field(item.message, "message"), _json_field(item.meta, "meta")
    record = (
        f'{{"channel":{json.dumps(item.channel)},"message":{message},"meta":{meta},'
        f'"store":{json.dumps(item.store)},"queuedAt":{queued_at}}}'
    )
    return record.encode("utf-8")


def _associated(item_id: str, consultation_id: str, kind: str) -> bytes:
    return json.dumps(["outbox", item_id, consultation_id, kind]).encode("utf-8")


def _canonical(message: Any) -> str | None:
    """The payload as comparable text: a history message equal to an item's is that item."""
    try:
        return json.dumps(message, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return None


def _may_have_landed(exc: BusError) -> bool:
    # No answer (timeout, connection lost) or a server error: the origin may have stored it.
    return exc.status_code is None or exc.status_code >= 500


def _reason_code(exc: BusError) -> str:
    if isinstance(exc, AccessDeniedError):
        return "access-denied"
    if exc.status_code is not None:
        return f"http-{exc.status_code}"
    return "not-publishable"  # refused before sending: too large, or not JSON the bus can send


def retry_delay(failures: int, backoff: tuple[float, float], retry_after: float | None) -> float:
    """The wait before a lane tries again: its back-off, or longer when the failure asked for more."""
    delay = back_off_delay(failures, *backoff)
    return delay if retry_after is None else max(delay, retry_after)


@dataclass
class _Entry:
    item: Outgoing
    queued_at: int  # timetoken (100 ns units) of the local clock when it was first put
    unsure: bool = False  # an attempt's outcome is unknown: it may have landed
    denials: int = 0
    # The last failure's least wait (a proxy refusing proxy_authorization: each attempt would send
    # the password again), or None: the back-off alone.
    retry_after: float | None = None


@dataclass(frozen=True)
class _Unreadable:
    """A row no key opens or that holds no valid item: left in the file for a later start."""

    id: str | None  # None when the row's id itself is not a valid id
    consultation_id: str
    reason: str


@dataclass(frozen=True)
class _Loaded:
    entries: list[_Entry] = field(default_factory=list)
    unreadable: list[_Unreadable] = field(default_factory=list)


class _Store:
    """The SQLite file. Every method runs on the outbox's one worker thread, never on the loop."""

    def __init__(self, path: Path, sealer: Sealer) -> None:
        self._path = path
        self._sealer = sealer
        self._db: sqlite3.Connection | None = None

    @contextlib.contextmanager
    def _file_errors(self) -> Iterator[None]:
        """What goes wrong opening or reading the file, as an OutboxFileError naming it."""
        try:
            yield
        except (OSError, sqlite3.Error) as exc:
            raise OutboxFileError(self._path, _file_reason(exc)) from exc

    def connect(self) -> None:
        with self._file_errors():
            # Created owner-only before SQLite opens it: sealed or not, it is the consultation's.
            os.close(os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600))
            self._path.chmod(0o600)
            db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=True)
            try:
                self._prepare(db)
            except BaseException:
                db.close()
                raise
        self._db = db

    def _prepare(self, db: sqlite3.Connection) -> None:
        # Checked before anything is written: a damaged file, or another program's, is left as it is.
        # The whole file is read, which an outbox (a few sealed messages) keeps cheap.
        if db.execute("PRAGMA quick_check").fetchone() != ("ok",):
            raise OutboxFileError(self._path, "the SQLite database is damaged")
        if not self._holds_an_outbox_or_nothing(db):
            raise OutboxFileError(self._path, "an SQLite database without the outbox's tables")
        if db.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,):
            start_incremental(db)  # a new file: before the journal mode, or SQLite ignores it
        db.execute("PRAGMA journal_mode=WAL")
        bound_log(db)
        # FULL: a put() that returned is on disk even if power is lost next.
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
        self._queue_set_aside_again(db)

    @staticmethod
    def _holds_an_outbox_or_nothing(db: sqlite3.Connection) -> bool:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return True
        columns = {row[1] for row in db.execute("PRAGMA table_info(pending)")}
        return columns >= _PENDING_COLUMNS

    @staticmethod
    def _queue_set_aside_again(db: sqlite3.Connection) -> None:
        """Rows an earlier version set aside back in the queue, in their old places."""
        if db.execute("SELECT 1 FROM set_aside LIMIT 1").fetchone() is None:
            return
        with db:
            db.execute("BEGIN IMMEDIATE")
            # An id put again since it was set aside is pending already: that copy is kept.
            db.execute(
                "INSERT OR IGNORE INTO pending (seq, id, consultation_id, kind, sealed)"
                " SELECT seq, id, consultation_id, kind, sealed FROM set_aside ORDER BY seq"
            )
            db.execute("DELETE FROM set_aside")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def connection(self) -> sqlite3.Connection:
        """The one connection, for the worker thread's jobs only."""
        return self._conn()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the outbox is not open: call open() first")
        return self._db

    def load(self) -> _Loaded:
        """Every row in order; one that cannot be opened stays in the file for a later start
        (the right key may come back) and never holds up the rows after it."""
        with self._file_errors():
            rows = (
                self._conn()
                .execute("SELECT id, consultation_id, kind, sealed FROM pending ORDER BY seq")
                .fetchall()
            )
        loaded = _Loaded()
        for item_id, consultation_id, kind, sealed in rows:
            try:
                plain = self._sealer.open(sealed, associated=_associated(item_id, consultation_id, kind))
                entry = self._entry(item_id, consultation_id, kind, plain)
            except SealError as exc:
                reason = str(exc)
            except (ValueError, KeyError, TypeError, RecursionError):
                reason = "not a valid outbox record"
            else:
                loaded.entries.append(entry)
                continue
            owner = consultation_id if isinstance(consultation_id, str) else ""
            loaded.unreadable.append(_Unreadable(_valid_id(item_id), owner, reason))
        return loaded

    @staticmethod
    def _entry(item_id: str, consultation_id: str, kind: str, plain: bytes) -> _Entry:
        record = json.loads(plain)
        item = Outgoing(
            id=item_id,
            consultation_id=consultation_id,
            channel=record["channel"],
            message=record["message"],
            meta=record["meta"],
            store=record["store"],
            kind=kind,
        )
        _payload(item, 0)  # the same checks as put(): a record that passes them is sendable
        queued_at = record["queuedAt"]
        if not isinstance(queued_at, int):
            raise ValueError("queuedAt")
        return _Entry(item, queued_at, unsure=True)

    def insert(self, item: Outgoing, payload: bytes, *, replace: bool = False) -> bool:
        """Seal and store; False when the id is already stored, unless ``replace`` (the stored
        row could not be opened): then the new copy takes its place in the queue."""
        sealed = self._sealer.seal(payload, associated=_associated(item.id, item.consultation_id, item.kind))
        db = self._conn()
        cursor = db.execute(
            "INSERT OR IGNORE INTO pending (id, consultation_id, kind, sealed) VALUES (?, ?, ?, ?)",
            (item.id, item.consultation_id, item.kind, sealed),
        )
        if cursor.rowcount == 1 or not replace:
            return cursor.rowcount == 1
        cursor = db.execute(
            "UPDATE pending SET consultation_id = ?, kind = ?, sealed = ? WHERE id = ?",
            (item.consultation_id, item.kind, sealed, item.id),
        )
        return cursor.rowcount == 1

    def remove_all(self, item_ids: list[str]) -> None:
        db = self._conn()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM pending WHERE id = ?", [(item_id,) for item_id in item_ids])

    def remove(self, item_id: str) -> None:
        # Not fsync'ed: a lost deletion only costs a history check after a restart.
        db = self._conn()
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            db.execute("DELETE FROM pending WHERE id = ?", (item_id,))
        finally:
            db.execute("PRAGMA synchronous=FULL")

    def pending_bytes(self) -> tuple[int, int]:
        """How many rows wait in the file, and their sealed size in bytes."""
        count, size = (
            self._conn().execute("SELECT count(*), coalesce(sum(length(sealed)), 0) FROM pending").fetchone()
        )
        return int(count), int(size)

    def compact(self, at_least: int) -> bool:
        """Give free pages back when they add up to ``at_least`` bytes; True if it did."""
        db = self._conn()
        if free_bytes(db) < at_least:
            return False
        compact(db)
        return True

    def wipe(self, consultation_id: str) -> None:
        db = self._conn()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM pending WHERE consultation_id = ?", (consultation_id,))
            db.execute("DELETE FROM set_aside WHERE consultation_id = ?", (consultation_id,))
        # The log still holds the rows' old pages until it is checkpointed and truncated.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class Outbox:
    """Keeps outgoing publishes on disk, sealed, and sends them while attached to a bus: in order
    per channel, one at a time per channel, up to ``max_in_flight`` channels at once."""

    def __init__(
        self,
        path: Path,
        sealer: Sealer,
        *,
        on_sent: SentCallback | None = None,
        on_failed: FailedCallback | None = None,
        backoff_min_seconds: float = 0.2,
        backoff_max_seconds: float = 5.0,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        if not backoff_min_seconds > 0:
            raise ValueError("backoff_min_seconds: must be greater than 0")
        if not backoff_max_seconds >= backoff_min_seconds:
            raise ValueError("backoff_max_seconds: must be at least backoff_min_seconds")
        if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
            raise ValueError("max_in_flight: must be a whole number of at least 1")
        self._path = path
        self._store = _Store(path, sealer)
        self._on_sent = on_sent
        self._on_failed = on_failed
        self._backoff = (backoff_min_seconds, backoff_max_seconds)
        self._thread = OneThread("outbox")
        self._entries: dict[str, _Entry] = {}  # in put order (the order on disk)
        # The same entries by channel, each in put order: a lane's sending order.
        self._by_channel: dict[str, dict[str, _Entry]] = {}
        # Rows left in the file that open() could not read: id -> consultation_id.
        self._unreadable: dict[str, str] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._bus: Bus | None = None
        self._denials: DenialHandler | None = None
        self._stop_listening: Callable[[], None] | None = None
        # One sending task per channel that has items, while attached; each ends when its
        # channel is empty, and detach() cancels and awaits those still running.
        self._lanes: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(max_in_flight)
        self._stopping = False
        # Set (and replaced) when the bus is connected again: cuts every lane's back-off short.
        self._retry_now = asyncio.Event()
        self._settling = 0  # items off the queue whose outcome the owner has not been told yet
        self._drained = asyncio.Event()
        self._drained.set()
        # Channels whose lane's last step failed (backing off), and a wake for flush() after
        # every step and every change of what waits.
        self._failing: set[str] = set()
        self._stepped = asyncio.Event()

    # -- disk ----------------------------------------------------------------------------------

    async def durability(self) -> SqliteDurability:
        """The journal mode and ``synchronous`` level of the connection that stores the items."""
        return await self._run(lambda: read_durability(self._store.connection))

    async def _run(self, job: Callable[[], T]) -> T:
        return await self._thread.run(job)

    async def open(self) -> list[Outgoing]:
        """Open the file and return the items still pending in it, in order (not those no key opens).

        OutboxFileError when the file cannot be used (damaged, another program's, not openable).
        """
        self._thread.start()
        try:
            await self._run(self._store.connect)
            loaded = await self._run(self._store.load)
        except BaseException:
            await self._close_store()
            raise
        for row in loaded.unreadable:
            shown = row.id if row.id is not None else "(not a valid id)"
            log.error("outbox item unreadable, kept for a later start id=%s reason=%s", shown, row.reason)
            if row.id is not None:
                self._unreadable[row.id] = row.consultation_id
        for entry in loaded.entries:
            self._add(entry)
        self._update_drained()
        if loaded.entries or loaded.unreadable:
            log.info("outbox opened pending=%d unreadable=%d", len(loaded.entries), len(loaded.unreadable))
        return [entry.item for entry in loaded.entries]

    async def put(self, item: Outgoing) -> None:
        """Store ``item`` (sealed, fsync'ed) before returning; a repeated id is a no-op.

        ValueError names the field and the reason when ``item`` cannot be stored; nothing changes then.
        """
        if not isinstance(item, Outgoing):
            raise ValueError(f"item: must be an Outgoing, got {type(item).__name__}")
        queued_at = time.time_ns() // 100
        payload = _payload(item, queued_at)
        if item.id in self._entries or item.id in self._recent:
            return
        replace = item.id in self._unreadable
        if not await self._run(lambda: self._store.insert(item, payload, replace=replace)):
            return
        if item.id in self._entries or item.id in self._recent:
            return  # a concurrent put() of the same id got there first
        self._unreadable.pop(item.id, None)
        self._add(_Entry(item, queued_at))
        self._drained.clear()
        self._start_lane(item.channel)

    def pending(self, consultation_id: str | None = None) -> list[Outgoing]:
        return [
            entry.item
            for entry in self._entries.values()
            if consultation_id is None or entry.item.consultation_id == consultation_id
        ]

    async def wait_drained(self, within: float) -> bool:
        """True once nothing is pending (sent or failed), False if items remain after ``within`` s."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._drained.wait()
        return self._drained.is_set()

    async def flush(self, within: float, *, give_up_on_failure: bool = True) -> bool:
        """Send what waits for up to ``within`` s (a stop's last chance): True once nothing is
        pending. Gives up earlier, False, once every channel that has items failed its last
        attempt since this call (the relay refusing, the network gone): waiting longer would only
        sit out back-offs (``give_up_on_failure=False``: it waits them out, as a consultation's
        end does: a kiosk has no other bus until the next one). Back-offs under way are cut short
        first, so each channel tries once more now. Not attached: at once. What is left stays on
        disk for the next bus."""
        if self._bus is None or self._stopping:
            return self._drained.is_set()
        self._failing.clear()
        self._wake_lanes()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while not self._drained.is_set() and not (give_up_on_failure and self._stalled()):
                    self._stepped.clear()
                    await self._stepped.wait()
        if not self._drained.is_set():
            log.info(
                "outbox flush ended: left for the next bus items=%d every_channel_failing=%s",
                len(self._entries),
                "yes" if self._stalled() else "no",
            )
        return self._drained.is_set()

    def _stalled(self) -> bool:
        """Every channel with items failed its last attempt (none is sending or about to)."""
        return bool(self._by_channel) and self._failing.issuperset(self._by_channel)

    async def wipe(self, consultation_id: str) -> list[Outgoing]:
        """Delete the consultation's unsent items from memory and disk (zeroed); returns them.

        An item whose publish is in flight is among them and may still arrive; it is not reported
        sent.
        """
        _text_field(consultation_id, "consultation_id")
        removed = [
            self._drop(entry).item
            for entry in list(self._entries.values())
            if entry.item.consultation_id == consultation_id
        ]
        self._update_drained()
        for item_id in [i for i, owner in self._unreadable.items() if owner == consultation_id]:
            del self._unreadable[item_id]
        await self._run(lambda: self._store.wipe(consultation_id))
        if removed:
            log.info("outbox wiped consultation items=%d", len(removed))
        return removed

    async def expire(self, before_timetoken: int) -> list[Outgoing]:
        """End every item queued before ``before_timetoken`` (100 ns units since the epoch, as
        ``queuedAt``): off memory and disk, each reported failed with the reason ``expired``.

        One in flight may still arrive; it is not reported sent. Rows no key opens carry their
        time sealed and stay (a later start with the right key sends or expires them).
        """
        old = [entry for entry in self._entries.values() if entry.queued_at < before_timetoken]
        for entry in old:
            self._drop(entry)
            self._recent[entry.item.id] = None
        while len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        if not old:
            return []
        self._settling += 1
        try:
            ids = [entry.item.id for entry in old]
            try:
                await self._run(lambda: self._store.remove_all(ids))
            except Exception as exc:  # a restart loads them again, and its first pass expires them
                log.error("outbox expiry not written items=%d error=%s", len(ids), describe_exception(exc))
            for entry in old:
                log.warning("outbox item failed id=%s kind=%s reason=expired", entry.item.id, entry.item.kind)
                self._notify(self._on_failed, entry.item, "expired")
        finally:
            self._settling -= 1
            self._update_drained()
        return [entry.item for entry in old]

    async def compact(self, at_least: int = 1024 * 1024) -> bool:
        """Give the file's free pages back to the disk once they add up to ``at_least`` bytes."""
        return await self._run(lambda: self._store.compact(at_least))

    async def backlog(self) -> tuple[int, int]:
        """``(items, bytes)``: how many items wait in the file and their sealed size."""
        return await self._run(self._store.pending_bytes)

    async def file_bytes(self) -> int:
        """The file on disk, its write-ahead log included."""
        return await asyncio.to_thread(files_bytes, self._path)

    def _add(self, entry: _Entry) -> None:
        self._entries[entry.item.id] = entry
        self._by_channel.setdefault(entry.item.channel, {})[entry.item.id] = entry

    def _drop(self, entry: _Entry) -> _Entry:
        del self._entries[entry.item.id]
        lane = self._by_channel[entry.item.channel]
        del lane[entry.item.id]
        if not lane:
            del self._by_channel[entry.item.channel]
        return entry

    def _update_drained(self) -> None:
        if self._entries or self._settling:
            self._drained.clear()
        else:
            self._drained.set()
        self._stepped.set()

    # -- sending -------------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        """Whether the outbox is sending on a bus (between ``attach`` and ``detach``)."""
        return self._bus is not None

    def attach(self, bus: Bus, *, denials: DenialHandler | None = None) -> None:
        """Start sending pending items on ``bus``: in order per channel, channels side by side."""
        if not self._thread.running:
            raise RuntimeError("the outbox is not open: call open() first")
        if self._bus is not None:
            raise RuntimeError("the outbox is already attached to a bus")
        self._bus, self._denials, self._stopping = bus, denials, False
        self._retry_now = asyncio.Event()
        self._stop_listening = bus.add_status_listener(self._on_status)
        for channel in list(self._by_channel):
            self._start_lane(channel)

    async def detach(self, within: float = 2.0) -> None:
        """Stop sending: publishes in flight get ``within`` seconds to finish, then are cancelled."""
        if self._bus is None:
            return
        self._stopping = True
        self._retry_now.set()
        lanes = list(self._lanes.values())
        if lanes:
            _, unfinished = await asyncio.wait(lanes, timeout=within)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
        self._lanes.clear()
        if self._stop_listening is not None:
            self._stop_listening()
        self._bus = self._denials = self._stop_listening = None

    async def aclose(self) -> None:
        await self.detach()
        await self._close_store()

    async def _close_store(self) -> None:
        await self._thread.stop(self._store.close)

    def _on_status(self, change: StatusChange) -> None:
        if change.status is ConnectionStatus.CONNECTED:
            self._wake_lanes()

    def _wake_lanes(self) -> None:
        # Every lane waiting on this event wakes; later back-offs wait on a fresh one.
        self._retry_now.set()
        self._retry_now = asyncio.Event()

    def _start_lane(self, channel: str) -> None:
        """A sending task for ``channel`` unless it has one (or the outbox is not sending)."""
        bus = self._bus
        if bus is None or self._stopping or channel in self._lanes:
            return
        self._lanes[channel] = asyncio.create_task(self._lane(bus, channel), name="outbox-lane")

    def _lane_head(self, channel: str) -> _Entry | None:
        return next(iter(self._by_channel.get(channel, {}).values()), None)

    async def _lane(self, bus: Bus, channel: str) -> None:
        """Send ``channel``'s items one at a time, in order; end when it has none left."""
        failures = 0
        try:
            while not self._stopping:
                entry = self._lane_head(channel)
                if entry is None:
                    return  # put() starts a new lane; no await between this check and the removal below
                # Taken before the step: a `connected` that comes during it cuts the back-off short.
                wake = self._retry_now
                async with self._slots:
                    if self._stopping:
                        return
                    progressed = await self._step(bus, entry)
                if progressed:
                    failures = 0
                    self._failing.discard(channel)
                    self._stepped.set()
                    continue
                failures += 1
                self._failing.add(channel)
                self._stepped.set()
                delay = retry_delay(failures, self._backoff, entry.retry_after)
                entry.retry_after = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await wake.wait()
        finally:
            self._failing.discard(channel)
            if self._lanes.get(channel) is asyncio.current_task():
                del self._lanes[channel]

    async def _step(self, bus: Bus, entry: _Entry) -> bool:
        """Publish the lane's head, or first settle the unsure ones in history; False to back off."""
        try:
            if entry.unsure and entry.item.store:
                return await self._reconcile(bus, entry.item.channel)
            return await self._attempt(bus, entry)
        except Exception as exc:  # our own bug or the disk's: never the end of sending
            log.error("outbox send step failed id=%s error=%s", entry.item.id, describe_exception(exc))
            return False

    async def _attempt(self, bus: Bus, entry: _Entry) -> bool:
        """Publish a lane's head once; False when it should be tried again after a back-off."""
        item = entry.item
        try:
            result = await bus.publish(item.channel, item.message, store=item.store, meta=item.meta)
        except AccessDeniedError as exc:
            entry.denials += 1
            # Asked every time: a token that merely expired again (a long clinic outage) is renewed
            # again; the keeper answers False for a fresh token still refused (the verdict). The
            # bound only stops a handler that always says yes.
            if entry.denials <= _DENIALS_ASKED and self._denials is not None and await self._ask_denials(exc):
                return True  # the token was refreshed: try again at once
            await self._finish(entry, failed="access-denied")
            return True
        except BusError as exc:
            if not exc.retryable:
                await self._finish(entry, failed=_reason_code(exc))
                return True
            entry.unsure = entry.unsure or _may_have_landed(exc)
            entry.retry_after = exc.retry_after
            log.info("outbox publish failed id=%s status=%s will_retry=yes", item.id, exc.status_code)
            return False
        except asyncio.CancelledError:
            entry.unsure = True  # the request may already be on its way
            raise
        except Exception:
            entry.unsure = True
            raise
        await self._finish(entry, timetoken=result.timetoken)
        return True

    async def _ask_denials(self, exc: AccessDeniedError) -> bool:
        assert self._denials is not None
        try:
            return bool(await self._denials(exc))
        except Exception as handler_error:
            log.error("outbox denial handler failed error=%s", describe_exception(handler_error))
            return False

    async def _reconcile(self, bus: Bus, channel: str) -> bool:
        """Look for every unsure item of ``channel`` in its history; False to retry after a back-off."""
        unsure = [e for e in self._by_channel.get(channel, {}).values() if e.unsure and e.item.store]
        waiting: dict[str, list[_Entry]] = {}
        for entry in unsure:
            waiting.setdefault(_canonical(entry.item.message) or "", []).append(entry)  # put() checked it
        since = min(entry.queued_at for entry in unsure) - _CLOCK_SKEW_TIMETOKENS
        found: list[tuple[_Entry, int]] = []
        pages = 0
        try:
            while len(found) < len(unsure) and pages < _HISTORY_PAGES_MAX:
                page = await bus.history(channel, since=since, limit=_HISTORY_PAGE)
                pages += 1
                for envelope in page:
                    if envelope.publisher != bus.user_id:
                        continue
                    matches = waiting.get(_canonical(envelope.message) or "")
                    if matches:
                        found.append((matches.pop(0), envelope.timetoken))
                if len(page) < _HISTORY_PAGE:
                    break  # (a page short only of undecryptable messages ends the read early too)
                since = page[-1].timetoken
        except BusError as exc:
            if exc.retryable:
                log.info("outbox history check failed items=%d will_retry=yes", len(unsure))
                return False
            # Not readable here (a write-only channel): publish again; receivers de-duplicate by id.
            log.warning(
                "outbox history check refused items=%d reason=%s: publishing again",
                len(unsure),
                _reason_code(exc),
            )
            found = []
        landed = {id(entry) for entry, _ in found}
        for entry in unsure:
            if id(entry) not in landed:
                entry.unsure = False
        for entry, timetoken in found:
            log.info("outbox item found already sent id=%s", entry.item.id)
            await self._finish(entry, timetoken=timetoken)
        log.info("outbox history check items=%d found=%d pages=%d", len(unsure), len(found), pages)
        return True

    async def _finish(
        self, entry: _Entry, *, timetoken: int | None = None, failed: str | None = None
    ) -> None:
        """Sent or failed: off the queue and off disk, then the owner is told."""
        item = entry.item
        if self._entries.get(item.id) is not entry:
            return  # wiped while its publish was in flight
        self._drop(entry)
        self._recent[item.id] = None
        if len(self._recent) > _RECENT_IDS:
            self._recent.popitem(last=False)
        # Until the owner is told: another lane finishing meanwhile must not report the outbox drained.
        self._settling += 1
        try:
            try:
                await self._run(lambda: self._store.remove(item.id))
            except Exception as exc:  # it was sent all the same: a restart finds it in history
                log.error("outbox removal failed id=%s error=%s", item.id, describe_exception(exc))
            if failed is not None:
                log.warning("outbox item failed id=%s kind=%s reason=%s", item.id, item.kind, failed)
                self._notify(self._on_failed, item, failed)
            else:
                assert timetoken is not None
                self._notify(self._on_sent, item, timetoken)
        finally:
            self._settling -= 1
            self._update_drained()  # after the owner was told: a drained outbox has reported everything

    @staticmethod
    def _notify(callback: Callable[[Outgoing, Any], None] | None, item: Outgoing, value: Any) -> None:
        if callback is None:
            return
        try:
            callback(item, value)
        except Exception as exc:
            log.error("outbox callback failed id=%s error=%s", item.id, describe_exception(exc))
