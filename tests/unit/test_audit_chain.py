"""The audit trail's store: keyed hash chain, tamper detection by position, group commit, durability.

Real SQLite files in a temporary directory; tampering goes through a raw connection that drops
the append-only triggers first, as someone with the file would.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from telehealth_client.audit.store import GENESIS_HASH, SCHEMA_VERSION
from telehealth_client.audit.trail import (
    AuditStatus,
    AuditStoreError,
    AuditTrail,
    ChainKeys,
    DamagedStoreError,
    audit_event,
    read_status,
    store_path,
    verify_chain,
)
from telehealth_client.protocol import messages
from tests.support.audit_store import database, tamper

ORG = "org-test"
DEVICE = "kiosk-1"
EDITED = "content does not match its hash (edited, or written without this device's key)"
SECRET = "audit-unit-device-credential-0123"
KEYS = ChainKeys(SECRET)


def event(number: int = 0, **overrides: Any) -> messages.AuditEvent:
    fields: dict[str, Any] = {
        "organization_id": ORG,
        "actor_id": "kiosk-1",
        "actor_role": "patient",
        "resource_type": "consultation",
        "resource_id": "consultation.dr-lee.pat-1",
        "channel": "consultation.dr-lee.pat-1",
        "action": "join",
        "metadata": {"sessionId": "consultation.dr-lee.pat-1", "sequence": number},
    }
    fields.update(overrides)
    return audit_event("CONSULTATION_SESSION_START", **fields)


@pytest.fixture
async def trail(tmp_path: Path) -> AsyncIterator[AuditTrail]:
    opened = AuditTrail(tmp_path, keys=KEYS, device_id=DEVICE, organization_id=ORG, sink=None)
    await opened.open()
    yield opened
    await opened.aclose()


async def record_many(trail: AuditTrail, count: int) -> list[messages.AuditEvent]:
    events = [event(number) for number in range(count)]
    for item in events:
        await trail.record(item)
    return events


# -- the chain ---------------------------------------------------------------------------------------


async def test_records_form_a_hash_chain_that_verifies(trail: AuditTrail, tmp_path: Path) -> None:
    events = await record_many(trail, 5)
    report = verify_chain(tmp_path, KEYS, DEVICE)
    assert (report.ok, report.records, report.first_broken, report.reason) == (True, 5, None, None)

    rows = database(tmp_path).execute("SELECT position, id, event, prev_hash, hash FROM records").fetchall()
    assert [row[1] for row in rows] == [item.id for item in events]
    previous = GENESIS_HASH
    for position, _, text, prev_hash, stored in rows:
        assert prev_hash == previous
        assert stored == KEYS.link(prev_hash, position, text)
        # An HMAC under a key derived from the secret: the plain hash of the same text differs.
        assert stored != hashlib.sha256(f"{prev_hash}\n{position}\n{text}".encode()).hexdigest()
        assert not hmac.compare_digest(
            stored, ChainKeys("another-secret-0123456789").link(prev_hash, position, text)
        )
        previous = stored
    # Stored as the canonical wire form, stamped with this device and its sequence: camelCase,
    # sorted keys, compact.
    first = json.loads(rows[0][2])
    assert first == {**messages.encode(events[0]), "deviceId": DEVICE, "sequence": 1}
    assert rows[0][2] == json.dumps(first, sort_keys=True, separators=(",", ":"))
    assert [json.loads(row[2])["sequence"] for row in rows] == [1, 2, 3, 4, 5]


async def test_the_store_is_its_owners_only(trail: AuditTrail, tmp_path: Path) -> None:
    await record_many(trail, 1)
    assert stat.S_IMODE(store_path(tmp_path).parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store_path(tmp_path).stat().st_mode) == 0o600


async def test_records_cannot_be_updated_or_deleted_through_sqlite(trail: AuditTrail, tmp_path: Path) -> None:
    await record_many(trail, 2)
    db = database(tmp_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE records SET event = '{}' WHERE position = 1")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM records WHERE position = 2")
    db.close()
    assert verify_chain(tmp_path, KEYS, DEVICE).ok


async def test_an_edited_record_is_reported_with_its_position(trail: AuditTrail, tmp_path: Path) -> None:
    await record_many(trail, 5)
    await trail.aclose()
    tamper(tmp_path, """UPDATE records SET event = replace(event, '"join"', '"left"') WHERE position = 3""")
    report = verify_chain(tmp_path, KEYS, DEVICE)
    assert (report.ok, report.first_broken) == (False, 3)
    assert report.reason == f"record 3: {EDITED}"


async def test_an_edited_and_rehashed_record_breaks_the_next_link(trail: AuditTrail, tmp_path: Path) -> None:
    await record_many(trail, 5)
    await trail.aclose()
    db = database(tmp_path)
    prev_hash, text = db.execute("SELECT prev_hash, event FROM records WHERE position = 3").fetchone()
    db.close()
    edited = text.replace('"join"', '"left"')
    tamper(
        tmp_path,
        f"UPDATE records SET event = '{edited}', hash = '{KEYS.link(prev_hash, 3, edited)}'"
        " WHERE position = 3",
    )
    report = verify_chain(tmp_path, KEYS, DEVICE)
    assert (report.ok, report.first_broken) == (False, 4)
    assert report.reason == "record 4: previous record missing or altered"


async def test_a_deleted_middle_record_is_reported_with_its_position(
    trail: AuditTrail, tmp_path: Path
) -> None:
    await record_many(trail, 5)
    await trail.aclose()
    tamper(tmp_path, "DELETE FROM records WHERE position = 3")
    report = verify_chain(tmp_path, KEYS, DEVICE)
    assert (report.ok, report.first_broken) == (False, 3)
    assert report.reason == "record 3: missing (the chain goes from record 2 to record 4)"


async def test_a_deleted_last_record_is_reported_with_its_position(trail: AuditTrail, tmp_path: Path) -> None:
    await record_many(trail, 5)
    await trail.aclose()
    tamper(tmp_path, "DELETE FROM records WHERE position = 5")
    report = verify_chain(tmp_path, KEYS, DEVICE)
    assert (report.ok, report.first_broken) == (False, 5)
    assert report.reason == "record 5: the last record(s) were removed (1 missing)"


async def test_a_missing_store_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(AuditStoreError, match="no audit store"):
        verify_chain(tmp_path, KEYS, DEVICE)
    with pytest.raises(AuditStoreError, match="no audit store"):
        read_status(tmp_path)
    assert not store_path(tmp_path).exists()  # reading created nothing


async def test_a_file_that_is_not_an_audit_store_is_an_error(tmp_path: Path) -> None:
    store_path(tmp_path).parent.mkdir()
    store_path(tmp_path).write_bytes(b"not a database at all" * 100)
    # There but not a store: a broken trail (the command line's exit 1), not a wrong path.
    report = verify_chain(tmp_path, KEYS, DEVICE)
    assert (report.ok, report.records, report.reason) == (
        False,
        0,
        "not a readable audit store (DatabaseError)",
    )
    with pytest.raises(DamagedStoreError, match="not a readable audit store"):
        read_status(tmp_path)


# -- durability and group commit ---------------------------------------------------------------------


async def test_a_record_that_returned_is_on_disk(trail: AuditTrail, tmp_path: Path) -> None:
    item = event(1)
    position = await trail.record(item)
    # A fresh connection, while the trail still holds its own: the record is committed.
    fresh = database(tmp_path)
    try:
        row = fresh.execute("SELECT position, event FROM records WHERE id = ?", (item.id,)).fetchone()
    finally:
        fresh.close()
    assert row is not None and row[0] == position == 1
    assert json.loads(row[1])["id"] == item.id
    db_mode = sqlite3.connect(store_path(tmp_path))
    assert db_mode.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db_mode.close()


async def test_concurrent_records_are_committed_together_in_call_order(
    trail: AuditTrail, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await trail.record(event(0))  # position 1
    transactions: list[int] = []
    store = trail._db
    real_append = store.append

    async def counted(batch: Any) -> Any:
        transactions.append(len(batch))
        return await real_append(batch)

    monkeypatch.setattr(store, "append", counted)
    events = [event(number) for number in range(1, 41)]
    positions = await asyncio.gather(*(trail.record(item) for item in events))
    assert positions == list(range(2, 42))
    assert sum(transactions) == 40 and len(transactions) < 40  # grouped, not one by one
    rows = database(tmp_path).execute("SELECT id FROM records ORDER BY position").fetchall()
    assert [row[0] for row in rows[1:]] == [item.id for item in events]
    assert verify_chain(tmp_path, KEYS, DEVICE).ok


async def test_positions_continue_after_reopening(tmp_path: Path) -> None:
    first = AuditTrail(tmp_path, keys=KEYS, device_id=DEVICE, organization_id=ORG, sink=None)
    await first.open()
    await record_many(first, 3)
    await first.aclose()
    second = AuditTrail(tmp_path, keys=KEYS, device_id=DEVICE, organization_id=ORG, sink=None)
    await second.open()
    try:
        assert await second.record(event(9)) == 4
        assert second.status() == AuditStatus(records=4, awaiting_sink=4, awaiting_channel=4)
    finally:
        await second.aclose()
    assert verify_chain(tmp_path, KEYS, DEVICE).ok
    assert read_status(tmp_path) == AuditStatus(records=4, awaiting_sink=4, awaiting_channel=4)


# -- bad input changes nothing -----------------------------------------------------------------------


async def test_a_repeated_id_is_refused_and_not_stored_twice(trail: AuditTrail, tmp_path: Path) -> None:
    item = event(1)
    assert await trail.record(item) == 1
    with pytest.raises(ValueError, match=r"^id: already recorded \(record 1\)$"):
        await trail.record(item)
    # In one group commit too: the second copy fails, the others are stored.
    other, third = event(2), event(3)
    results = await asyncio.gather(
        trail.record(other), trail.record(other), trail.record(third), return_exceptions=True
    )
    assert results[0] == 2 and isinstance(results[1], ValueError) and results[2] == 3
    assert trail.status().records == 3
    assert verify_chain(tmp_path, KEYS, DEVICE).ok


async def test_another_organizations_event_is_refused(trail: AuditTrail) -> None:
    with pytest.raises(ValueError, match=r"^organizationId: must be this trail's organization$"):
        await trail.record(event(1, organization_id="org-other"))
    assert trail.status().records == 0


async def test_an_event_with_free_text_built_by_hand_is_refused(trail: AuditTrail, tmp_path: Path) -> None:
    good = event(1)
    forged = good.model_copy(update={"metadata": {"reason": "Chest pain since Tuesday"}})
    with pytest.raises(ValueError, match=r"^metadata\.reason: must be an ID or code") as refused:
        await trail.record(forged)
    assert "Chest" not in str(refused.value)
    assert trail.status().records == 0
    assert b"Chest" not in store_path(tmp_path).read_bytes()


async def test_record_before_open_and_after_close_is_refused(tmp_path: Path) -> None:
    trail = AuditTrail(tmp_path, keys=KEYS, device_id=DEVICE, organization_id=ORG, sink=None)
    with pytest.raises(RuntimeError, match="not open"):
        await trail.record(event(1))
    await trail.open()
    await trail.aclose()
    await trail.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        await trail.record(event(1))


# -- the key -----------------------------------------------------------------------------------------


def rewrite_from(tmp_path: Path, position: int, link: Any) -> None:
    """Edit record ``position`` and recompute every later hash and the head with ``link``: all
    that someone with the file (but not the key) can do."""
    db = database(tmp_path)
    try:
        db.execute("DROP TRIGGER records_no_update")
        rows = db.execute("SELECT position, event, hash FROM records ORDER BY position").fetchall()
        prev = rows[position - 2][2]
        for number, text, _ in rows[position - 1 :]:
            if number == position:
                text = text.replace('"join"', '"left"')
            digest = link(prev, number, text)
            db.execute(
                "UPDATE records SET event = ?, prev_hash = ?, hash = ? WHERE position = ?",
                (text, prev, digest, number),
            )
            prev = digest
        db.execute("UPDATE head SET hash = ?", (prev,))
    finally:
        db.close()


def plain_sha256(prev_hash: str, position: int, text: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{position}\n{text}".encode()).hexdigest()


@pytest.mark.parametrize(
    "link", [plain_sha256, ChainKeys("a-key-someone-made-up-0123").link], ids=["unkeyed", "another-key"]
)
async def test_an_edited_chain_rehashed_to_the_end_without_the_key_is_reported(
    trail: AuditTrail, tmp_path: Path, link: Any
) -> None:
    await record_many(trail, 6)
    await trail.aclose()
    rewrite_from(tmp_path, 3, link)
    report = verify_chain(tmp_path, KEYS, DEVICE)
    assert (report.ok, report.first_broken, report.records) == (False, 3, 2)
    assert report.reason == f"record 3: {EDITED}"


async def test_a_whole_chain_written_under_another_key_is_reported_at_its_first_record(
    tmp_path: Path,
) -> None:
    forged = ChainKeys("a-key-someone-made-up-0123")
    forger = AuditTrail(tmp_path, keys=forged, device_id=DEVICE, organization_id=ORG, sink=None)
    await forger.open()
    await record_many(forger, 2)
    await forger.aclose()
    assert verify_chain(tmp_path, ChainKeys("a-key-someone-made-up-0123"), DEVICE).ok
    report = verify_chain(tmp_path, KEYS, DEVICE)
    assert (report.ok, report.first_broken) == (False, 1)
    # And the agent does not append to it: its chain would hide the problem.
    trail = AuditTrail(tmp_path, keys=KEYS, device_id=DEVICE, organization_id=ORG, sink=None)
    with pytest.raises(DamagedStoreError, match="does not verify under this device's credential") as refused:
        await trail.open()
    assert "previous_device_credentials" in refused.value.advice
    assert verify_chain(tmp_path, ChainKeys("a-key-someone-made-up-0123"), DEVICE).records == 2  # unchanged


async def test_after_a_key_rotation_the_old_key_still_verifies_what_it_signed(tmp_path: Path) -> None:
    old = AuditTrail(tmp_path, keys=KEYS, device_id=DEVICE, organization_id=ORG, sink=None)
    await old.open()
    await record_many(old, 2)
    await old.aclose()
    rotated = ChainKeys("the-new-cipher-key-0123456789", [SECRET])
    trail = AuditTrail(tmp_path, keys=rotated, device_id=DEVICE, organization_id=ORG, sink=None)
    await trail.open()
    await record_many(trail, 2)
    await trail.aclose()
    # The old key's two records and the new key's two, all verified under the rotated keys.
    report = verify_chain(tmp_path, rotated, DEVICE)
    assert (report.ok, report.records, report.first_broken) == (True, 4, None)
    # Records 3 and 4 were signed with the new key only.
    assert verify_chain(tmp_path, KEYS, DEVICE).first_broken == 3
    assert verify_chain(tmp_path, ChainKeys("the-new-cipher-key-0123456789"), DEVICE).first_broken == 1


# -- the store's version and its delivery state ------------------------------------------------------


async def test_a_store_of_another_version_is_refused_clearly(trail: AuditTrail, tmp_path: Path) -> None:
    await record_many(trail, 2)
    await trail.aclose()
    db = database(tmp_path)
    db.execute("PRAGMA user_version = 1")
    db.close()
    expected = (
        f"audit store version 1, this agent reads versions {SCHEMA_VERSION} and {SCHEMA_VERSION + 1} "
        "(written by another version of the agent, or altered)"
    )
    report = verify_chain(tmp_path, KEYS, DEVICE)
    assert (report.ok, report.reason) == (False, expected)
    with pytest.raises(DamagedStoreError) as refused:
        read_status(tmp_path)
    assert str(refused.value) == f"{store_path(tmp_path)}: {expected}"
    again = AuditTrail(tmp_path, keys=KEYS, device_id=DEVICE, organization_id=ORG, sink=None)
    with pytest.raises(DamagedStoreError) as refused:
        await again.open()
    assert refused.value.problem == expected
    assert database(tmp_path).execute("PRAGMA user_version").fetchone() == (1,)  # left as it was


async def test_a_file_that_is_not_an_audit_store_is_refused_at_open_and_left_alone(tmp_path: Path) -> None:
    path = store_path(tmp_path)
    path.parent.mkdir()
    path.write_bytes(b"not a database at all" * 100)
    trail = AuditTrail(tmp_path, keys=KEYS, device_id=DEVICE, organization_id=ORG, sink=None)
    with pytest.raises(DamagedStoreError) as refused:
        await trail.open()
    assert (refused.value.path, refused.value.problem) == (path, "not a readable audit store (DatabaseError)")
    assert path.read_bytes() == b"not a database at all" * 100


async def test_status_counts_waiting_records_from_the_records_themselves(
    trail: AuditTrail, tmp_path: Path
) -> None:
    await record_many(trail, 3)
    await trail._db.acknowledge("sink", 1)
    await trail._db.refuse("sink", 2, 403)
    await trail._db.acknowledge("sink", 1)  # a second time changes nothing
    assert trail.status() == AuditStatus(records=3, awaiting_sink=1, awaiting_channel=3, refused_sink=1)
    assert read_status(tmp_path) == trail.status()
    await trail.aclose()
    db = database(tmp_path)
    db.execute("DELETE FROM settled WHERE position = 1")
    db.close()
    # A lost acknowledgement: the record waits again (the sink keeps one copy per id).
    assert read_status(tmp_path) == AuditStatus(
        records=3, awaiting_sink=2, awaiting_channel=3, refused_sink=1
    )
    assert verify_chain(tmp_path, KEYS, DEVICE).ok


async def test_a_forged_acknowledgement_is_reported_by_verify(trail: AuditTrail, tmp_path: Path) -> None:
    await record_many(trail, 3)
    await trail._db.acknowledge("sink", 1)
    await trail.aclose()
    db = database(tmp_path)
    mac = db.execute("SELECT mac FROM settled WHERE position = 1").fetchone()[0]
    db.execute(
        "INSERT INTO settled (position, target, refused_status, mac) VALUES (2, 'sink', NULL, ?)", (mac,)
    )
    db.close()
    assert read_status(tmp_path).awaiting_sink == 1  # it would hide record 2 from the sink...
    report = verify_chain(tmp_path, KEYS, DEVICE)  # ...so verify names it
    assert (report.ok, report.first_broken) == (False, 2)
    assert report.reason == "record 2: its delivery state (sink) was altered"


async def test_an_acknowledgement_for_a_record_that_does_not_exist_is_reported(
    trail: AuditTrail, tmp_path: Path
) -> None:
    await record_many(trail, 2)
    await trail.aclose()
    db = database(tmp_path)
    db.execute("INSERT INTO settled (position, target, refused_status, mac) VALUES (9, 'sink', NULL, 'x')")
    db.close()
    report = verify_chain(tmp_path, KEYS, DEVICE)
    assert (report.ok, report.reason) == (False, "delivery state for record 9, which does not exist")
