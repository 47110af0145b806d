"""A version 2 audit store, left by an agent before the upgrade: delivered, never appended to.

Version 2 keyed its chain with the organization's cipher key (``LegacyChainKeys``) and had no
device ID, no sequence and no authenticated head. On the first start after the upgrade (and only
then: no version 3 store, no acknowledgement file, nothing of this device at the sink) the file is
set aside as ``audit/audit-v2.sqlite3`` (``set_aside_legacy_store``: out of WAL mode, renamed, the
directory flushed) and a version 3 store begins beside it, recording in its authenticated head the
file's name, record count and last hash (``audit_origin.SetAside``). What waited in it is still
delivered, as it was recorded (without ``deviceId`` or ``sequence``: the sink holds those
sequences for version 3 events only, so they stay gapless), before the new store's events; the
file stays as the record of what was there. At every start each of its records must verify under
the cipher key and link to the next up to its head, and the head must be what the version 3 store
recorded: a file planted, swapped or altered later (anyone with the cipher key can write one) stops
the start, and a record changed after it is never sent (``StoreWorker.pending``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final

from telehealth_client.audit.keys import LegacyChainKeys
from telehealth_client.audit.origin import SetAside
from telehealth_client.audit.store import (
    LEGACY_SCHEMA_VERSION,
    AuditStatus,
    DamagedStoreError,
    StoreWorker,
    Target,
    delivery_counts,
    insert_settlement,
    settled_status,
    store_path,
    store_problem,
    unsettled_hashes,
    use_durable_settings,
)

LEGACY_FILE: Final = "audit-v2.sqlite3"
LEGACY_GENESIS_HASH: Final = hashlib.sha256(b"telehealth-client audit chain v2").hexdigest()
LEGACY_TABLES: Final = ("records", "head", "settled")
LEGACY_KEY_ADVICE: Final = (
    "after a cipher key rotation, list the old key in previous_cipher_keys; otherwise move it out of "
    "audit/ (what waits in it is then not delivered, and `telehealth-agent audit verify` notes it); "
    "`telehealth-agent audit verify` tells what is wrong"
)
SWAPPED_ADVICE: Final = (
    "put back the version 2 store this agent set aside, or move this file out of audit/ (keep it for "
    "investigation; what waited in the one set aside is then not delivered)"
)


def legacy_store_path(state_dir: Path) -> Path:
    return store_path(state_dir).with_name(LEGACY_FILE)


def set_aside_problem(expected: SetAside, records: int, last_hash: str) -> str | None:
    """Why a version 2 file whose head says ``records`` and ``last_hash`` is not the one set aside."""
    if (records, last_hash) == (expected.records, expected.last_hash):
        return None
    found = f"this one has {records}" + (" and another last record" if records == expected.records else "")
    return (
        f"not the version 2 store this agent set aside (that one had {expected.records} records; {found}): "
        "swapped, planted or altered (anyone with the organization's cipher key can write one); "
        "it is not delivered"
    )


def set_aside_legacy_store(state_dir: Path) -> None:
    """Move the version 2 store at ``audit.sqlite3`` to ``audit-v2.sqlite3`` (the caller checked
    that it is one and that nothing was set aside before).

    Its WAL is folded into the file first (journal mode DELETE), so the rename moves everything.
    """
    current, legacy = store_path(state_dir), legacy_store_path(state_dir)
    if legacy.exists():
        raise FileExistsError(f"{legacy}: a version 2 store was set aside already")
    db = sqlite3.connect(str(current), isolation_level=None)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.execute("PRAGMA journal_mode=DELETE")
    finally:
        db.close()
    os.replace(current, legacy)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            current.with_name(current.name + suffix).unlink()
    fd = os.open(current.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LegacyDatabase(StoreWorker):
    """The set-aside version 2 store: what waits in it, and its delivery outcomes."""

    def __init__(
        self, path: Path, keys: LegacyChainKeys, on_change: Callable[[], None] | None = None
    ) -> None:
        super().__init__(path, keys, on_change)
        self._keys = keys
        self._set_aside = SetAside(path.name, 0, LEGACY_GENESIS_HASH)

    @property
    def set_aside(self) -> SetAside:
        """What the open file holds, as the version 3 store records it."""
        return self._set_aside

    async def open(self, expected: SetAside | None = None) -> AuditStatus:
        """DamagedStoreError naming the file unless it is a version 2 store whose head matches its
        last record under the cipher keys, and (``expected``) the one the version 3 store recorded."""
        return await self._start(lambda db: self._prepare(db, expected))

    async def acknowledge(self, target: Target, position: int) -> None:
        await self._run(lambda: self._settle(target, position, None))

    async def refuse(self, target: Target, position: int, status: int) -> None:
        await self._run(lambda: self._settle(target, position, status))

    def _prepare(self, db: sqlite3.Connection, expected: SetAside | None) -> None:
        problem = store_problem(db, LEGACY_SCHEMA_VERSION, LEGACY_TABLES)
        if problem is not None:
            raise DamagedStoreError(self.path, problem)
        use_durable_settings(db)
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
                raise DamagedStoreError(
                    self.path,
                    "its last record does not match the chain's head under this agent's cipher key",
                    LEGACY_KEY_ADVICE,
                )
        if expected is not None:
            problem = set_aside_problem(expected, count, last_hash)
            if problem is not None:
                raise DamagedStoreError(self.path, problem, SWAPPED_ADVICE)
        # Every record, each linked to the one before, up to the last hash checked above (and
        # recorded in the device-keyed store's authenticated origin): together they pin every record.
        from telehealth_client.audit.verify import legacy_records_problem  # it imports this module

        unsettled = unsettled_hashes(db)
        report = legacy_records_problem(db, self._keys, fields_at=unsettled)
        if not report.ok:
            raise DamagedStoreError(self.path, report.reason or "the chain does not verify", SWAPPED_ADVICE)
        self._trusted = unsettled
        self._set_aside = SetAside(self.path.name, count, last_hash)
        self._status = AuditStatus(records=count, **delivery_counts(db))

    def _settle(self, target: Target, position: int, refused_status: int | None) -> None:
        def write(db: sqlite3.Connection) -> bool:
            settled = insert_settlement(db, self._keys, target, position, refused_status)
            if settled:
                self._settled(db, position)
            return settled

        settled = self._transaction(write)
        if settled:
            self._changed(settled_status(self._status, target, refused_status is not None))
