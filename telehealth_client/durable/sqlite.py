"""What SQLite promises about a committed write, read back from the connection that writes.

The outbox and the audit store report "stored" only once a write is on disk; that holds only with
``synchronous=FULL`` (or EXTRA): in WAL mode, NORMAL may lose the last transactions to a power cut.
The setting is per connection, so only the store's own connection can say; each store exposes
``durability()`` for its tests and for ``doctor``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Final

_SYNCHRONOUS: Final = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


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
