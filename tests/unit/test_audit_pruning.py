"""The audit store's pruning on its own (``audit_pruning``): in batches between appends, the store
version it leaves, what a pruned store still delivers, and what it never prunes.

Real SQLite files; the sink's acknowledgements are stored as the trail stores them
(``tests/integration/audit/test_audit_retention.py`` has the real sink). The retention's clock
is moved on by pruning with a cutoff in the future, never by waiting.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from telehealth_client.audit.origin import NO_ORIGIN
from telehealth_client.audit.pruning import Anchor
from telehealth_client.audit.trail import AuditTrail, ChainKeys, read_status, store_path, verify_chain
from tests.support.audit import kiosk_event
from tests.support.audit_store import database

ORG = "org-test"
DEVICE = "kiosk-1"
KEYS = ChainKeys("kiosk-1-device-credential-0123")


def later() -> datetime:
    return datetime.now(UTC) + timedelta(days=1)


@pytest.fixture
async def trail(tmp_path: Path) -> AsyncIterator[AuditTrail]:
    opened = AuditTrail(tmp_path, keys=KEYS, device_id=DEVICE, organization_id=ORG, sink=None)
    await opened.open()
    yield opened
    await opened.aclose()


async def recorded_and_acknowledged(trail: AuditTrail, count: int, acknowledged: int) -> None:
    for number in range(count):
        await trail.record(kiosk_event(number, ORG))
    for position in range(1, acknowledged + 1):
        await trail._db.acknowledge("sink", position, position)


def version(tmp_path: Path) -> int:
    db = database(tmp_path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_an_unpruned_stores_head_mac_is_as_before_pruning_existed() -> None:
    """A store written by an earlier agent keeps verifying: the anchor adds to the MAC's text only
    once something was pruned."""
    plain = KEYS.head(DEVICE, 0, 5, "f" * 64, NO_ORIGIN)
    assert KEYS.head(DEVICE, 0, 5, "f" * 64, NO_ORIGIN, None) == plain
    assert KEYS.head(DEVICE, 0, 5, "f" * 64, NO_ORIGIN, Anchor(0, "e" * 64)) == plain
    assert KEYS.head(DEVICE, 0, 5, "f" * 64, NO_ORIGIN, Anchor(2, "e" * 64)) != plain
    assert KEYS.head(DEVICE, 0, 5, "f" * 64, NO_ORIGIN, Anchor(2, "e" * 64)) != KEYS.head(
        DEVICE, 0, 5, "f" * 64, NO_ORIGIN, Anchor(3, "e" * 64)
    )


async def test_the_first_prune_makes_the_store_version_4_and_only_the_pruned_prefix_deletable(
    trail: AuditTrail, tmp_path: Path
) -> None:
    await recorded_and_acknowledged(trail, 6, 4)
    assert version(tmp_path) == 3
    assert (await trail.prune(later())).records == 4
    assert version(tmp_path) == 4
    db = sqlite3.connect(store_path(tmp_path), isolation_level=None)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("DELETE FROM records WHERE position = 5")
    finally:
        db.close()


async def test_pruning_goes_in_batches_while_records_are_appended(trail: AuditTrail, tmp_path: Path) -> None:
    await recorded_and_acknowledged(trail, 30, 25)
    more = [kiosk_event(number, ORG) for number in range(30, 40)]
    report, *positions = await asyncio.gather(trail.prune(later(), batch=4), *(trail.record(e) for e in more))
    assert report.records == 25
    assert positions == list(range(31, 41))
    status = trail.status()
    assert (status.records, status.pruned, status.awaiting_sink) == (40, 25, 15)
    assert (await trail.verify()).ok


async def test_what_the_channel_still_waited_for_is_no_longer_pending_once_pruned(trail: AuditTrail) -> None:
    await recorded_and_acknowledged(trail, 5, 3)
    await trail._db.acknowledge("channel", 1)
    report = await trail.prune(later())
    assert (report.records, report.unpublished) == (3, 2)  # records 2 and 3 never reached the channel
    assert [record.position for record in await trail._db.pending("channel", 0, 10)] == [4, 5]
    assert trail.status().awaiting_channel == 2
    assert read_status(trail._state_dir) == trail.status()


async def test_a_record_that_no_longer_verifies_is_kept_as_evidence(
    trail: AuditTrail, tmp_path: Path
) -> None:
    await recorded_and_acknowledged(trail, 5, 4)
    db = database(tmp_path)
    db.execute("DROP TRIGGER records_no_update")
    db.execute("""UPDATE records SET event = replace(event, '"check"', '"other"') WHERE position = 3""")
    db.close()
    report = await trail.prune(later())
    assert (report.records, report.held_at) == (2, 3)
    assert report.held == "it does not verify (`telehealth-agent audit verify` names the problem)"
    assert verify_chain(tmp_path, KEYS, DEVICE).first_broken == 3


async def test_a_store_begun_after_a_removed_one_prunes_by_position_and_keeps_its_sequences(
    tmp_path: Path,
) -> None:
    """A store that continues a removed one (its base above 0): positions and sequences differ,
    and both stay right after a prune."""
    first = AuditTrail(tmp_path, keys=KEYS, device_id=DEVICE, organization_id=ORG, sink=None)
    await first.open()
    await recorded_and_acknowledged(first, 3, 3)
    await first.aclose()
    for name in ("audit.sqlite3", "audit.sqlite3-wal", "audit.sqlite3-shm"):
        (store_path(tmp_path).parent / name).unlink(missing_ok=True)
    trail = AuditTrail(tmp_path, keys=KEYS, device_id=DEVICE, organization_id=ORG, sink=None)
    await trail.open()
    try:
        for number in range(4):
            await trail.record(kiosk_event(number, ORG))
        for position in range(1, 4):
            await trail._db.acknowledge("sink", position, 3 + position)
        assert (await trail.prune(later())).records == 3
        status = trail.status()
        assert (status.base, status.records, status.pruned) == (3, 4, 3)
    finally:
        await trail.aclose()
    report = verify_chain(tmp_path, KEYS, DEVICE)
    assert (report.ok, report.base, report.pruned, report.last_sequence) == (True, 3, 3, 7)
