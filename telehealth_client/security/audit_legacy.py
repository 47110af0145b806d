"""A version 2 audit store, left by an agent before the upgrade: delivered, never appended to.

Version 2 keyed its chain with the organization's cipher key (``LegacyChainKeys``) and had no
device ID, no sequence and no authenticated head. On the first start after the upgrade the file
is set aside as ``audit/audit-v2.sqlite3`` (``set_aside_legacy_store``: out of WAL mode, renamed,
the directory flushed) and a version 3 store begins beside it. What waited in it is still
delivered, as it was recorded (without ``deviceId`` or ``sequence``: the sink holds those
sequences for version 3 events only, so they stay gapless), before the new store's events; the
file stays as the record of what was there. It is checked as version 2 checked: its head against
its last record under the cipher key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final

from telehealth_client.security.audit_keys import LegacyChainKeys
from telehealth_client.security.audit_store import (
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
    store_version,
    use_durable_settings,
)

LEGACY_FILE: Final = "audit-v2.sqlite3"
LEGACY_GENESIS_HASH: Final = hashlib.sha256(b"telehealth-client audit chain v2").hexdigest()
LEGACY_TABLES: Final = ("records", "head", "settled")
LEGACY_KEY_ADVICE: Final = (
    "after a cipher key rotation, list the old key in previous_cipher_keys; otherwise move it aside "
    "(what waits in it is then not delivered); `telehealth-agent audit verify` tells what is wrong"
)


def legacy_store_path(state_dir: Path) -> Path:
    return store_path(state_dir).with_name(LEGACY_FILE)


def stored_version(path: Path) -> int | None:
    """The file's schema version, read without changing it; None when there is no file."""
    if not path.is_file():
        return None
    try:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        return store_version(db)
    except sqlite3.DatabaseError:
        return None  # not a database: the version 3 store's open names the problem
    finally:
        db.close()


def set_aside_legacy_store(state_dir: Path) -> bool:
    """If ``audit.sqlite3`` is a version 2 store, move it to ``audit-v2.sqlite3``; True if it did.

    Its WAL is folded into the file first (journal mode DELETE), so the rename moves everything.
    DamagedStoreError if a version 2 store was set aside already: two would be ambiguous.
    """
    current, legacy = store_path(state_dir), legacy_store_path(state_dir)
    if stored_version(current) != LEGACY_SCHEMA_VERSION:
        return False
    if legacy.exists():
        raise DamagedStoreError(
            current,
            f"a version 2 store, and {legacy.name} (set aside earlier) is there too",
            f"deliver or archive {legacy.name} first, then start again",
        )
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
    return True


class LegacyDatabase(StoreWorker):
    """The set-aside version 2 store: what waits in it, and its delivery outcomes."""

    def __init__(
        self, path: Path, keys: LegacyChainKeys, on_change: Callable[[], None] | None = None
    ) -> None:
        super().__init__(path, on_change)
        self._keys = keys

    async def open(self) -> AuditStatus:
        """DamagedStoreError naming the file unless it is a version 2 store whose head matches its
        last record under the cipher keys."""
        return await self._start(self._prepare)

    async def acknowledge(self, target: Target, position: int) -> None:
        await self._run(lambda: self._settle(target, position, None))

    async def refuse(self, target: Target, position: int, status: int) -> None:
        await self._run(lambda: self._settle(target, position, status))

    def _prepare(self, db: sqlite3.Connection) -> None:
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
        self._status = AuditStatus(records=count, **delivery_counts(db))

    def _settle(self, target: Target, position: int, refused_status: int | None) -> None:
        settled = self._transaction(
            lambda db: insert_settlement(db, self._keys, target, position, refused_status)
        )
        if settled:
            self._changed(settled_status(self._status, target, refused_status is not None))
