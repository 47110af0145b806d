"""What SQLite promises about a committed write, and how a store's files stay small.

The outbox and the audit store report "stored" only once a write is on disk; that holds only with
``synchronous=FULL`` (or EXTRA): in WAL mode, NORMAL may lose the last transactions to a power cut.
The setting is per connection, so only the store's own connection can say; each store exposes
``durability()`` for its tests and for ``doctor``.

A store that deletes rows (the outbox once an item is sent, the audit store once it prunes)
keeps the freed pages unless it gives them back: ``compact`` does (incremental vacuum, turned on
by one VACUUM for a file made before it was), then empties the write-ahead log, which
``bound_log`` keeps from staying at its largest size after a checkpoint. ``files_bytes`` is what a
store takes on disk, its log included.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

_SYNCHRONOUS: Final = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
_INCREMENTAL: Final = 2
# The write-ahead log is cut back to this after a checkpoint (it grows with a big transaction).
LOG_LIMIT_BYTES: Final = 4 * 1024 * 1024


@dataclass(frozen=True)
class SqliteDurability:
    journal_mode: str  # "wal", "delete", ...
    synchronous: str  # OFF, NORMAL, FULL or EXTRA

    @property
    def power_safe(self) -> bool:
        """A committed transaction survives a power loss."""
        return self.synchronous in ("FULL", "EXTRA")


def read_durability(db: sqlite3.Connection) -> SqliteDurability:
    journal_mode = str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    level = int(db.execute("PRAGMA synchronous").fetchone()[0])
    return SqliteDurability(journal_mode, _SYNCHRONOUS.get(level, str(level)))


def start_incremental(db: sqlite3.Connection) -> None:
    """For a file with nothing in it yet: freed pages can be given back later. SQLite takes the
    setting only before anything is written, the journal mode included."""
    db.execute("PRAGMA auto_vacuum = INCREMENTAL")


def bound_log(db: sqlite3.Connection) -> None:
    db.execute(f"PRAGMA journal_size_limit = {LOG_LIMIT_BYTES}")


def compact(db: sqlite3.Connection) -> None:
    """Give the file's free pages back to the disk, then empty the write-ahead log (outside a
    transaction). A file without incremental vacuum gets it from one VACUUM, which copies what
    is left; sqlite3.OperationalError (busy: another connection reading) is the caller's to retry."""
    if int(db.execute("PRAGMA auto_vacuum").fetchone()[0]) != _INCREMENTAL:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        db.execute("VACUUM")
    elif int(db.execute("PRAGMA freelist_count").fetchone()[0]):
        # executescript steps it to the end: execute() frees one page per step.
        db.executescript("PRAGMA incremental_vacuum;")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def free_bytes(db: sqlite3.Connection) -> int:
    """What the file holds that no row uses."""
    pages = int(db.execute("PRAGMA freelist_count").fetchone()[0])
    return pages * int(db.execute("PRAGMA page_size").fetchone()[0])


def files_bytes(path: Path) -> int:
    """The database file and its write-ahead log and shared memory, as they are now."""
    total = 0
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        with contextlib.suppress(FileNotFoundError):
            total += path.with_name(name).stat().st_size
    return total
