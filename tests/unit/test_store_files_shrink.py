"""A store's file gives back what its deleted rows took (``durable.sqlite.compact``): a file made
before incremental vacuum by one VACUUM, a file made with it by an incremental vacuum; and the
agent's stores are made with it. Real SQLite files in a temporary directory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from telehealth_client.audit.trail import AuditTrail, ChainKeys, store_path
from telehealth_client.durable.at_rest import Sealer
from telehealth_client.durable.outbox import Outbox
from telehealth_client.durable.sqlite import LOG_LIMIT_BYTES, compact, files_bytes, free_bytes


def filled(path: Path, *, incremental: bool) -> sqlite3.Connection:
    """A WAL database of 2,000 rows of 1 KB, 1,900 of them then deleted."""
    db = sqlite3.connect(path, isolation_level=None)
    if incremental:
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE rows (n INTEGER PRIMARY KEY, body TEXT)")
    db.execute("BEGIN")
    db.executemany("INSERT INTO rows VALUES (?, ?)", [(n, "x" * 1024) for n in range(2000)])
    db.execute("COMMIT")
    db.execute("DELETE FROM rows WHERE n >= 100")
    return db


@pytest.mark.parametrize("incremental", [False, True], ids=["made-before", "made-with-it"])
def test_compact_gives_deleted_rows_space_back_and_empties_the_log(tmp_path: Path, incremental: bool) -> None:
    path = tmp_path / "store.sqlite3"
    db = filled(path, incremental=incremental)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = files_bytes(path)
        assert free_bytes(db) > 1024 * 1024
        compact(db)
        assert free_bytes(db) == 0
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental from now on
        assert db.execute("SELECT count(*) FROM rows").fetchone() == (100,)
    finally:
        db.close()
    assert files_bytes(path) < before / 10, (before, files_bytes(path))
    assert (
        not path.with_name("store.sqlite3-wal").exists()
        or path.with_name("store.sqlite3-wal").stat().st_size == 0
    )


async def test_the_agents_stores_are_made_able_to_shrink_and_bound_their_log(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite3", Sealer("retention-unit-cipher-key", purpose="outbox"))
    await outbox.open()
    trail = AuditTrail(
        tmp_path,
        keys=ChainKeys("retention-unit-credential"),
        device_id="kiosk-1",
        organization_id="org-1",
        sink=None,
    )
    await trail.open()
    # journal_size_limit is the writing connection's own setting: read on the store's thread.
    pragma = "PRAGMA journal_size_limit"
    assert await outbox._run(lambda: outbox._store.connection.execute(pragma).fetchone()) == (
        LOG_LIMIT_BYTES,
    )
    assert await trail._db._run(lambda: trail._db._connection().execute(pragma).fetchone()) == (
        LOG_LIMIT_BYTES,
    )
    await outbox.aclose()
    await trail.aclose()
    for path in (tmp_path / "outbox.sqlite3", store_path(tmp_path)):
        db = sqlite3.connect(path)
        try:
            assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,), path
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",), path
        finally:
            db.close()
