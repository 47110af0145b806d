"""An agent upgraded over a version 2 audit store (keyed by the cipher key) loses nothing that waits
in it: the store is set aside whole (its WAL folded in), kept for delivery, and a device-keyed
version 3 store begins beside it at sequence 1, recording under its authenticated head what it set
aside. Only a device that never ran the device-keyed trail upgrades: afterwards a version 2 store is
refused. The version 2 store is written as the earlier agent wrote it (``tests/audit_v2_store.py``),
WAL and all, as a killed agent leaves it."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from telehealth_client.audit.acks import write_acknowledged
from telehealth_client.audit.legacy import set_aside_legacy_store
from telehealth_client.audit.origin import SetAside, StoreOrigin
from telehealth_client.audit.trail import (
    AuditStatus,
    AuditTrail,
    ChainKeys,
    DamagedStoreError,
    LegacyChainKeys,
    acknowledgement_path,
    audit_event,
    legacy_store_path,
    store_path,
    verify_chain,
    verify_legacy_chain,
)
from telehealth_client.protocol import messages
from tests.support.audit_v2_store import version_2_text, write_version_2_store

ORG = "org-test"
DEVICE = "kiosk-1"
CIPHER_KEY = "organization-cipher-key-0123456789"
KEYS = ChainKeys("kiosk-1-device-credential-0123")


def event(number: int) -> messages.AuditEvent:
    return audit_event(
        "DEVICE_CHECK_COMPLETED",
        organization_id=ORG,
        actor_id="pat-1",
        actor_role="patient",
        resource_type="device",
        resource_id=DEVICE,
        action="check",
        metadata={"number": number},
    )


ORGANIZATION_KEYS = LegacyChainKeys(CIPHER_KEY)


def upgraded(state_dir: Path, legacy_keys: LegacyChainKeys | None = ORGANIZATION_KEYS) -> AuditTrail:
    return AuditTrail(
        state_dir, keys=KEYS, device_id=DEVICE, organization_id=ORG, sink=None, legacy_keys=legacy_keys
    )


def stored(path: Path) -> list[tuple[int, str, str]]:
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        return db.execute("SELECT position, id, event FROM records ORDER BY position").fetchall()
    finally:
        db.close()


@pytest.fixture
def version_2(tmp_path: Path) -> list[messages.AuditEvent]:
    """Four records: 1 delivered to both, 2 to the sink only, 3 and 4 to neither."""
    events = [event(number) for number in range(4)]
    settled = {1: ("sink", "channel"), 2: ("sink",)}
    write_version_2_store(store_path(tmp_path), CIPHER_KEY, events, settled)
    return events


async def test_a_version_2_store_is_set_aside_whole_and_what_waits_in_it_is_kept(
    tmp_path: Path, version_2: list[messages.AuditEvent]
) -> None:
    trail = upgraded(tmp_path)
    await trail.open()
    try:
        assert trail.legacy_status() == AuditStatus(records=4, awaiting_sink=2, awaiting_channel=3)
        assert trail.status() == AuditStatus(records=0, awaiting_sink=0, awaiting_channel=0)
        # What waits is delivered from the set-aside store, as it was recorded.
        assert trail._legacy is not None
        pending = await trail._legacy.pending("sink", 0, 10)
        assert [(record.position, record.event, record.verified) for record in pending] == [
            (3, version_2_text(version_2[2]), True),
            (4, version_2_text(version_2[3]), True),
        ]
        assert await trail.record(event(9)) == 1
    finally:
        await trail.aclose()

    aside = legacy_store_path(tmp_path)
    assert [(position, event_id) for position, event_id, _ in stored(aside)] == [
        (number + 1, item.id) for number, item in enumerate(version_2)
    ]
    # Records 1-4 were still in the WAL of the file left behind: all of them came along.
    report = verify_legacy_chain(aside, LegacyChainKeys(CIPHER_KEY))
    assert (report.ok, report.records) == (True, 4)
    # The new store is this device's, from sequence 1.
    ((_, _, text),) = stored(store_path(tmp_path))
    assert (json.loads(text)["deviceId"], json.loads(text)["sequence"]) == (DEVICE, 1)
    assert verify_chain(tmp_path, KEYS, DEVICE).ok


async def test_what_was_delivered_from_it_stays_delivered_after_a_restart(
    tmp_path: Path, version_2: list[messages.AuditEvent]
) -> None:
    trail = upgraded(tmp_path)
    await trail.open()
    assert trail._legacy is not None
    await trail._legacy.acknowledge("sink", 3)
    await trail.aclose()

    again = upgraded(tmp_path)
    await again.open()
    try:
        assert again.legacy_status() == AuditStatus(records=4, awaiting_sink=1, awaiting_channel=3)
    finally:
        await again.aclose()
    assert verify_legacy_chain(legacy_store_path(tmp_path), LegacyChainKeys(CIPHER_KEY)).ok


async def test_a_version_2_store_whose_last_record_does_not_verify_stops_the_start_naming_it(
    tmp_path: Path, version_2: list[messages.AuditEvent]
) -> None:
    trail = upgraded(tmp_path, LegacyChainKeys("another-cipher-key-0123456789"))
    with pytest.raises(DamagedStoreError) as refused:
        await trail.open()
    assert refused.value.path == legacy_store_path(tmp_path)
    assert (
        refused.value.problem
        == "its last record does not match the chain's head under this agent's cipher key"
    )
    assert "previous_cipher_keys" in refused.value.advice
    assert not store_path(tmp_path).exists()  # nothing begun beside a store that cannot be delivered


async def test_without_the_cipher_key_a_version_2_store_is_not_silently_left_behind(
    tmp_path: Path, version_2: list[messages.AuditEvent]
) -> None:
    with pytest.raises(DamagedStoreError, match=r"a version 2 store .* no cipher key was given"):
        await upgraded(tmp_path, None).open()


# -- the upgrade is trusted once, and what it set aside is recorded -----------------------------------------


def version_2_head(path: Path) -> tuple[int, str]:
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        records, last_hash = db.execute("SELECT records, hash FROM head").fetchone()
    finally:
        db.close()
    return int(records), str(last_hash)


async def test_the_new_store_records_what_it_set_aside_under_its_authenticated_head(
    tmp_path: Path, version_2: list[messages.AuditEvent]
) -> None:
    trail = upgraded(tmp_path)
    await trail.open()
    await trail.aclose()
    records, last_hash = version_2_head(legacy_store_path(tmp_path))
    assert records == 4
    report = verify_chain(tmp_path, KEYS, DEVICE)
    assert report.origin == StoreOrigin(set_aside=SetAside("audit-v2.sqlite3", 4, last_hash))

    # Erasing that record (the origin row is bound into the head's MAC) is reported.
    db = sqlite3.connect(store_path(tmp_path), isolation_level=None)
    db.execute("DROP TRIGGER origin_no_update")
    db.execute("UPDATE origin SET legacy_file = NULL, legacy_records = NULL, legacy_hash = NULL")
    db.close()
    reason = verify_chain(tmp_path, KEYS, DEVICE).reason or ""
    assert "the chain's head (it says 0 records) does not verify under this device's credential" in reason


async def test_an_upgrade_cut_short_after_setting_aside_is_finished_at_the_next_start(
    tmp_path: Path, version_2: list[messages.AuditEvent]
) -> None:
    """Set aside, then stopped before the new store was written: nothing says this device ever ran
    the device-keyed trail, so the set-aside store is taken as this upgrade's."""
    set_aside_legacy_store(tmp_path)
    assert not store_path(tmp_path).exists()
    trail = upgraded(tmp_path)
    await trail.open()
    try:
        assert trail.legacy_status() == AuditStatus(records=4, awaiting_sink=2, awaiting_channel=3)
    finally:
        await trail.aclose()
    origin = verify_chain(tmp_path, KEYS, DEVICE).origin
    assert origin is not None and origin.set_aside is not None and origin.set_aside.records == 4


async def test_a_version_2_store_where_the_device_keyed_one_was_is_refused_and_left_in_place(
    tmp_path: Path, version_2: list[messages.AuditEvent]
) -> None:
    write_acknowledged(acknowledgement_path(tmp_path), KEYS, DEVICE, 3)
    with pytest.raises(DamagedStoreError) as refused:
        await upgraded(tmp_path).open()
    assert refused.value.path == store_path(tmp_path)
    assert refused.value.problem == (
        "a version 2 store, but audit-acknowledged.json shows this device's device-keyed trail had "
        "sequences up to 3 acknowledged by the sink: the device-keyed store was replaced by an older copy "
        "or by a forged version 2 store (a rollback)"
    )
    assert not legacy_store_path(tmp_path).exists()  # not set aside, not delivered


async def test_a_version_2_store_beside_one_set_aside_is_refused(
    tmp_path: Path, version_2: list[messages.AuditEvent]
) -> None:
    set_aside_legacy_store(tmp_path)
    write_version_2_store(store_path(tmp_path), CIPHER_KEY, [event(7)], {})
    with pytest.raises(DamagedStoreError, match=r"^.*: a version 2 store, and audit-v2\.sqlite3 \(set aside"):
        await upgraded(tmp_path).open()


async def test_a_set_aside_store_no_longer_there_is_logged_and_the_trail_goes_on(
    tmp_path: Path, version_2: list[messages.AuditEvent], caplog: pytest.LogCaptureFixture
) -> None:
    trail = upgraded(tmp_path)
    await trail.open()
    await trail.aclose()
    legacy_store_path(tmp_path).rename(tmp_path / "archived-v2.sqlite3")
    again = upgraded(tmp_path)
    await again.open()
    try:
        assert again.legacy_status() is None
        assert await again.record(event(8)) == 1
    finally:
        await again.aclose()
    assert any(
        record.levelname == "ERROR"
        and "audit-v2.sqlite3, the version 2 store set aside when this store began (4 records), is no longer "
        "there"
        in record.getMessage()
        for record in caplog.records
    )
    assert verify_chain(tmp_path, KEYS, DEVICE).ok
