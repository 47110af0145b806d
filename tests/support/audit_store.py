"""An audit store opened as SQLite directly, to read it or to damage it as an attacker would."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from telehealth_client.audit.trail import store_path


def database(state_dir: Path) -> sqlite3.Connection:
    """The audit store of ``state_dir``, in autocommit."""
    return sqlite3.connect(store_path(state_dir), isolation_level=None)


def tamper(state_dir: Path, *statements: str) -> None:
    """Run ``statements`` on the store with its no-update and no-delete triggers dropped."""
    db = database(state_dir)
    try:
        db.execute("DROP TRIGGER records_no_update")
        db.execute("DROP TRIGGER records_no_delete")
        for statement in statements:
            db.execute(statement)
    finally:
        db.close()


def checkpoint(state_dir: Path) -> None:
    """Fold the store's write-ahead log into it, as a closing agent leaves it at rest."""
    db = database(state_dir)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def record_hash(state_dir: Path, position: int) -> str:
    """The hash of the store's record at ``position``."""
    db = database(state_dir)
    try:
        return str(db.execute("SELECT hash FROM records WHERE position = ?", (position,)).fetchone()[0])
    finally:
        db.close()
