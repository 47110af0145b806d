"""How a version 3 audit store began, fixed when it is created and bound into its head's MAC.

Two facts someone with the state directory must not be able to make up or erase:

- ``set_aside``: the version 2 store this store's agent set aside at the upgrade (its file name,
  record count and last hash). Only that file is delivered and verified as the device's own: a
  version 2 file planted or swapped in later matches none of it.
- ``follows_removed``: the store was begun while the acknowledgement file or the sink's head
  showed an earlier store of this device (deleted or moved aside): events that store had not
  delivered may be lost, and ``audit verify`` says so on every run.

The ``origin`` table holds one row, written with the head and never changed (triggers refuse
UPDATE and DELETE); ``origin_text`` is what the head's MAC covers.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class SetAside:
    """A version 2 store as it was set aside: its file name (in the store's directory), its record
    count and its last hash (which pins every record before it)."""

    file_name: str
    records: int
    last_hash: str


@dataclass(frozen=True)
class StoreOrigin:
    follows_removed: bool = False
    set_aside: SetAside | None = None


NO_ORIGIN: Final = StoreOrigin()

ORIGIN_SCHEMA: Final = """
CREATE TABLE origin (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    follows_removed INTEGER NOT NULL CHECK (follows_removed IN (0, 1)),
    legacy_file TEXT,
    legacy_records INTEGER,
    legacy_hash TEXT
);
CREATE TRIGGER origin_no_update BEFORE UPDATE ON origin
BEGIN SELECT RAISE(ABORT, 'the store''s origin is fixed'); END;
CREATE TRIGGER origin_no_delete BEFORE DELETE ON origin
BEGIN SELECT RAISE(ABORT, 'the store''s origin is fixed'); END;
"""


def origin_text(origin: StoreOrigin) -> str:
    aside = origin.set_aside
    legacy = "-" if aside is None else f"{aside.file_name}\n{aside.records}\n{aside.last_hash}"
    return f"origin\n{int(origin.follows_removed)}\n{legacy}"


def insert_origin(db: sqlite3.Connection, origin: StoreOrigin) -> None:
    aside = origin.set_aside
    db.execute(
        "INSERT INTO origin (singleton, follows_removed, legacy_file, legacy_records, legacy_hash)"
        " VALUES (1, ?, ?, ?, ?)",
        (
            int(origin.follows_removed),
            None if aside is None else aside.file_name,
            None if aside is None else aside.records,
            None if aside is None else aside.last_hash,
        ),
    )


def read_origin(db: sqlite3.Connection) -> StoreOrigin | None:
    """None when the row is missing (the head's MAC then cannot verify: it covers the origin)."""
    row = db.execute(
        "SELECT follows_removed, legacy_file, legacy_records, legacy_hash FROM origin"
    ).fetchone()
    if row is None:
        return None
    follows_removed, name, records, last_hash = row
    aside = (
        None
        if name is None or records is None or last_hash is None
        else SetAside(str(name), int(records), str(last_hash))
    )
    return StoreOrigin(follows_removed=bool(follows_removed), set_aside=aside)
