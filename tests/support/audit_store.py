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
