"""Reading an audit store read-only, for ``telehealth-agent audit verify | status``.

``verify_store`` checks a version 3 (or, pruned, 4) store as this device: the head names this
device and its MAC verifies (it covers the anchor a prune left, ``audit_pruning``), every
record links to the one before under the device's key (the first one kept to the anchor),
carries this device's ``deviceId`` and the sequence its position gives, every delivery outcome's
MAC verifies, the chain's end is the head's, and the sink's acknowledgements (kept in the store
and in the file beside it) are not beyond the trail's end nor ahead in the file.
``verify_legacy_store`` checks a version 2 store as version 2 did. Reports name positions,
sequences, device IDs and counts, never a record's content. Where the keys themselves look wrong
(nothing in the store verifies, or only a first run of records does not), the report says which
setting to check.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Container
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from telehealth_client.audit.acks import AcknowledgementFileError, read_acknowledged
from telehealth_client.audit.keys import ChainKeys, LegacyChainKeys
from telehealth_client.audit.legacy import LEGACY_GENESIS_HASH, LEGACY_TABLES
from telehealth_client.audit.origin import StoreOrigin
from telehealth_client.audit.pruning import Backlog, read_backlog
from telehealth_client.audit.store import (
    LEGACY_SCHEMA_VERSION,
    SCHEMA_VERSION,
    AuditStatus,
    AuditStoreError,
    DamagedStoreError,
    LastRecord,
    StoreHead,
    acknowledgement_problem,
    delivery_counts,
    device_keyed_problem,
    event_field,
    head_problem,
    read_head,
    read_kept_acknowledgement,
    rollback_problem,
    store_problem,
    written_with_other_keys,
)


@dataclass(frozen=True)
class ChainReport:
    """``ok``, or what is wrong: the first broken record's position (1-based) when it is a record.

    ``records``: how many records were verified intact, from the first (all of them when ``ok``).
    ``device_id``, ``base`` (the sequence before the first record's), ``acknowledged`` (the
    highest sequence the sink acknowledged, as kept here) and ``origin`` (how the store began) are
    the head's, once it verified. ``last_hash``: the last record's hash, when ``ok``. ``pruned``:
    the records from the first that were delivered and pruned (counted in ``records``; the chain
    was verified from the anchor they left). ``unanchored``: begun without the sink's head and not
    yet placed after it (``audit_anchoring``): the next start that reaches the sink does.
    """

    ok: bool
    records: int
    first_broken: int | None = None
    reason: str | None = None
    device_id: str | None = None
    base: int = 0
    acknowledged: int = 0
    origin: StoreOrigin | None = None
    last_hash: str | None = None
    pruned: int = 0
    unanchored: bool = False

    @property
    def last_sequence(self) -> int:
        return self.base + self.records


class _LinkKeys(Protocol):
    def verifies_link(self, prev_hash: str, position: int, event: str, stored: str) -> bool: ...

    def verifies_settlement(
        self, record_hash: str, target: str, refused_status: int | None, stored: str
    ) -> bool: ...


def open_read_only(path: Path) -> sqlite3.Connection:
    if not path.exists():
        raise AuditStoreError(f"{path}: no audit store there")
    if not path.is_file():
        raise AuditStoreError(f"{path}: not a file")
    try:
        return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise AuditStoreError(f"{path}: cannot be opened ({type(exc).__name__})") from None


def _unreadable(exc: sqlite3.DatabaseError) -> ChainReport:
    return ChainReport(ok=False, records=0, reason=f"not a readable audit store ({type(exc).__name__})")


def verify_store(path: Path, keys: ChainKeys, device_id: str, acknowledgement_file: Path) -> ChainReport:
    """The version 3 store at ``path`` checked as device ``device_id``; AuditStoreError only if
    there is no file to check. A file that is there but unreadable, of another version or
    missing a table is a broken trail."""
    db = open_read_only(path)
    try:
        problem = device_keyed_problem(db)
        if problem is not None:
            return ChainReport(ok=False, records=0, reason=problem)
        return _verify(db, keys, device_id, acknowledgement_file)
    except sqlite3.DatabaseError as exc:
        return _unreadable(exc)
    finally:
        db.close()


def verify_legacy_store(path: Path, keys: LegacyChainKeys) -> ChainReport:
    """A version 2 store checked under the cipher keys, as version 2 did."""
    db = open_read_only(path)
    try:
        problem = store_problem(db, LEGACY_SCHEMA_VERSION, LEGACY_TABLES)
        if problem is not None:
            return ChainReport(ok=False, records=0, reason=problem)
        return legacy_records_problem(db, keys)
    except sqlite3.DatabaseError as exc:
        return _unreadable(exc)
    finally:
        db.close()


def _verify(
    db: sqlite3.Connection, keys: ChainKeys, device_id: str, acknowledgement_file: Path
) -> ChainReport:
    head = read_head(db)
    head_unverified = head_problem(db, head, keys, device_id)
    if head is None or head.device_id != device_id or head.origin is None:
        # Another device's store, or none: its records cannot be judged under this device's key.
        return ChainReport(ok=False, records=0, reason=head_unverified)
    if head_unverified is not None and written_with_other_keys(db, head, keys):
        # Nothing verifies: the keys, not a record, are what to look at first.
        first = head.start[0] if head.records else None
        return ChainReport(ok=False, records=0, first_broken=first, reason=head_unverified)

    broken = records_problem(db, keys, device_id, head, head_unverified)
    if broken is not None:
        return broken
    count, last_hash = head.records, head.hash
    kept = read_kept_acknowledgement(db)
    problem = acknowledgement_problem(kept, keys, device_id)
    if problem is not None or kept is None:
        return ChainReport(ok=False, records=count, reason=problem)
    try:
        in_file = read_acknowledged(acknowledgement_file, keys, device_id)
    except AcknowledgementFileError as exc:
        return ChainReport(ok=False, records=count, reason=str(exc))
    problem = rollback_problem(head.base + count, kept[0], in_file, acknowledgement_file.name)
    if problem is not None:
        return ChainReport(ok=False, records=count, reason=problem)
    return ChainReport(
        ok=True,
        records=count,
        device_id=device_id,
        base=head.base,
        acknowledged=max(kept[0], in_file),
        origin=head.origin,
        last_hash=last_hash,
        pruned=0 if head.anchor is None else head.anchor.through,
        unanchored=head.unanchored,
    )


def records_problem(
    db: sqlite3.Connection,
    keys: ChainKeys,
    device_id: str,
    head: StoreHead,
    head_unverified: str | None = None,
    fields_at: Container[int] | None = None,
    at_sink: int = 0,
) -> ChainReport | None:
    """Every record of a version 3 store checked against the one before it, this device's key and
    the head (``head_unverified``: why its MAC does not verify, as the caller found); None when
    all of them verify.

    ``fields_at``: the positions whose event fields (id, deviceId, sequence) are read too (None:
    every one). The agent runs it at start (``AuditDatabase``) with the records not yet delivered:
    parsing every event takes seconds on a long chain, its MAC and link a fraction of that.
    ``at_sink``: the records up to this position are held by the sink with no gap (its MACed
    acknowledgement): their delivery outcomes' MACs are not checked (a forged one hides nothing)."""

    def event_problem(position: int, event: str) -> str | None:
        owner = event_field(event, "deviceId")
        if owner != device_id:
            return f"an event of device {owner}, not this device's ({device_id})"
        sequence = event_field(event, "sequence")
        if sequence != head.base + position:
            return f"its sequence is {sequence}, the chain's position gives {head.base + position}"
        return None

    broken, count, last_hash = _walk(
        db, keys, head.start, event_problem, device_keyed=True, fields_at=fields_at, at_sink=at_sink
    )
    if broken is not None:
        return broken
    if head_unverified is not None:
        return ChainReport(ok=False, records=count, reason=head_unverified)
    return _end_problem(db, count, last_hash, head.records, head.hash)


def legacy_records_problem(
    db: sqlite3.Connection, keys: LegacyChainKeys, fields_at: Container[int] | None = None
) -> ChainReport:
    """A version 2 store's records checked in order under the cipher keys and against its head:
    a report, ``ok`` with the count and last hash when every record verifies (``fields_at``: as
    for ``records_problem``)."""
    broken, count, last_hash = _walk(
        db, keys, (1, LEGACY_GENESIS_HASH), lambda position, event: None, fields_at=fields_at
    )
    if broken is not None:
        return broken
    head = db.execute("SELECT records, hash FROM head").fetchone()
    if head is None:
        return _broken(count + 1, "the chain's head is missing")
    return _end_problem(db, count, last_hash, int(head[0]), str(head[1])) or ChainReport(
        ok=True, records=count, last_hash=last_hash
    )


def _walk(
    db: sqlite3.Connection,
    keys: _LinkKeys,
    start: tuple[int, str],
    event_problem: Callable[[int, str], str | None],
    *,
    device_keyed: bool = False,
    fields_at: Container[int] | None = None,
    at_sink: int = 0,
) -> tuple[ChainReport | None, int, str]:
    """Every record in order from ``start`` (the first stored position and the hash it links to:
    record 1 and the genesis hash, or a prune's anchor): (the first broken one's report or None,
    the position up to which the chain is intact, the last hash).

    ``device_keyed``: a first record that does not verify may mean a credential not configured;
    ``fields_at``: where the event's id and ``event_problem`` are checked (None: everywhere);
    ``at_sink``: up to where delivery outcomes' MACs are not checked."""
    settled: dict[int, list[tuple[str, int | None, str]]] = {}
    for position, target, refused_status, mac in db.execute(
        "SELECT position, target, refused_status, mac FROM settled"
    ):
        settled.setdefault(int(position), []).append((str(target), refused_status, str(mac)))
    first = start[0]
    expected, prev = start
    rows = db.execute("SELECT position, id, event, prev_hash, hash FROM records ORDER BY position")
    try:
        for position, event_id, event, prev_hash, stored_hash in rows:
            if position != expected:
                why = (
                    f"missing (the chain goes from record {expected - 1} to record {position})"
                    if expected > 1
                    else f"missing (the chain starts at record {position})"
                )
                return _broken(expected, why), expected - 1, prev
            fields = fields_at is None or position in fields_at
            if not keys.verifies_link(prev_hash, position, event, stored_hash) or (
                fields and event_field(event, "id") != event_id
            ):
                unverified = (
                    _unverified_first_records(db, keys, start) if device_keyed and position == first else None
                )
                if unverified is not None:
                    return _unverified_report(unverified), 0, prev
                why = "content does not match its hash (edited, or written without this device's key)"
                return _broken(position, why), expected - 1, prev
            if prev_hash != prev:
                return _broken(position, "previous record missing or altered"), expected - 1, prev
            problem = event_problem(position, event) if fields else None
            if problem is not None:
                return _broken(position, problem), expected - 1, prev
            outcomes = settled.pop(position, [])
            for target, refused_status, mac in outcomes if position > at_sink else ():
                if not keys.verifies_settlement(stored_hash, target, refused_status, mac):
                    return _broken(position, f"its delivery state ({target}) was altered"), expected - 1, prev
            expected, prev = expected + 1, stored_hash
    except sqlite3.DatabaseError as exc:
        return _broken(expected, f"unreadable ({type(exc).__name__})"), expected - 1, prev
    if settled:
        report = ChainReport(
            ok=False,
            records=expected - 1,
            reason=f"delivery state for record {min(settled)}, which does not exist",
        )
        return report, expected - 1, prev
    return None, expected - 1, prev


def _unverified_first_records(
    db: sqlite3.Connection, keys: _LinkKeys, start: tuple[int, str]
) -> tuple[int, int, int] | None:
    """``(first, k, n)`` when the stored records ``first`` to k of n do not verify under ``keys``
    but still link to each other and every later one verifies: what a rotated-out credential that
    is not configured leaves (an edit breaks records here and there, and never makes the chain
    verify again after it)."""
    first = start[0]
    unverified, (expected, prev) = 0, start
    for position, event, prev_hash, stored_hash in db.execute(
        "SELECT position, event, prev_hash, hash FROM records ORDER BY position"
    ):
        if position != expected or prev_hash != prev:
            return None
        if not keys.verifies_link(prev_hash, position, event, stored_hash):
            if position != (unverified + 1 if unverified else first):
                return None  # a record that does not verify after one that does
            unverified = position
        expected, prev = expected + 1, stored_hash
    return (first, unverified, expected - 1) if unverified else None


def _unverified_report(unverified: tuple[int, int, int]) -> ChainReport:
    first, first_run, total = unverified
    credential = (
        "written under a device credential that is not configured (device_credential is wrong, or it "
        "was rotated: list the old one in previous_device_credentials), or edited"
    )
    if first_run == total:
        reason = f"no record verifies under the configured device credentials: {credential}"
    else:
        run = f"record {first} does" if first_run == first else f"records {first}-{first_run} do"
        reason = f"{run} not verify under the configured device credentials, the later ones do: {credential}"
    return ChainReport(ok=False, records=first - 1, first_broken=first, reason=reason)


def _end_problem(
    db: sqlite3.Connection, count: int, last_hash: str, head_records: int, head_hash: str
) -> ChainReport | None:
    if head_records > count:
        return _broken(count + 1, f"the last record(s) were removed ({head_records - count} missing)")
    if head_records < count or head_hash != last_hash:
        return _broken(count, "does not match the chain's head")
    return None


def _broken(position: int, why: str) -> ChainReport:
    return ChainReport(
        ok=False, records=position - 1, first_broken=position, reason=f"record {position}: {why}"
    )


# -- counts ---------------------------------------------------------------------------------------------


def read_store_status(path: Path, version: int = SCHEMA_VERSION) -> AuditStatus:
    """The counts of a device-keyed store (``SCHEMA_VERSION``, pruned or not) or a version 2 one
    (not verified: ``verify_store`` first); ``records`` is the chain's length, pruned records
    included. AuditStoreError if there is no store, DamagedStoreError if it is not one."""
    db = open_read_only(path)
    try:
        device_keyed = version == SCHEMA_VERSION
        problem = device_keyed_problem(db) if device_keyed else store_problem(db, version, LEGACY_TABLES)
        if problem is not None:
            raise DamagedStoreError(path, problem)
        (records,) = db.execute("SELECT count(*) FROM records").fetchone()
        status = AuditStatus(records=int(records), **delivery_counts(db))
        if not device_keyed:
            return status
        head, kept = read_head(db), read_kept_acknowledgement(db)
        if head is None:
            return replace(status, acknowledged=0 if kept is None else kept[0])
        return replace(
            status,
            records=head.records,
            base=head.base,
            acknowledged=0 if kept is None else kept[0],
            pruned=0 if head.anchor is None else head.anchor.through,
        )
    except sqlite3.DatabaseError as exc:
        raise DamagedStoreError(path, f"not a readable audit store ({type(exc).__name__})") from None
    finally:
        db.close()


def read_store_backlog(path: Path) -> Backlog:
    """What the sink has not acknowledged in the store at ``path`` (read after it verified)."""
    db = open_read_only(path)
    try:
        return read_backlog(db)
    except sqlite3.DatabaseError as exc:
        raise DamagedStoreError(path, f"not a readable audit store ({type(exc).__name__})") from None
    finally:
        db.close()


def read_last_record(path: Path) -> LastRecord | None:
    """The last record's position and timestamp (None for an empty chain)."""
    db = open_read_only(path)
    try:
        row = db.execute("SELECT position, event FROM records ORDER BY position DESC LIMIT 1").fetchone()
    except sqlite3.DatabaseError as exc:
        raise DamagedStoreError(path, f"not a readable audit store ({type(exc).__name__})") from None
    finally:
        db.close()
    if row is None:
        return None
    try:
        timestamp = json.loads(str(row[1])).get("timestamp")
    except (ValueError, AttributeError):
        timestamp = None
    return LastRecord(int(row[0]), timestamp if isinstance(timestamp, str) else None)
