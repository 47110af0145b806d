"""The audit store is evident against rollback by someone who can write the state directory but
holds neither the device credential nor the sink: a head moved back or reset, an older copy put
back, another device's store, a chain recomputed with the organization's key. Also what each event
carries (this device, a gapless sequence) and where a new store begins.

Real SQLite files; tampering goes through a raw connection (dropping the append-only triggers
first) or plain file copies, as someone with the state directory would. The sink's
acknowledgements are set up as the trail leaves them (store first, then the file beside it).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from telehealth_client.audit.acks import write_acknowledged
from telehealth_client.audit.origin import NO_ORIGIN, StoreOrigin
from telehealth_client.audit.trail import (
    AuditTrail,
    ChainKeys,
    DamagedStoreError,
    LegacyChainKeys,
    acknowledgement_path,
    store_path,
    verify_chain,
)
from tests.support.audit import kiosk_event

ORG = "org-test"
DEVICE = "kiosk-1"
CREDENTIAL = "kiosk-1-device-credential-0123"
KEYS = ChainKeys(CREDENTIAL)
# The organization-wide cipher key: every kiosk and cart holds it.
CIPHER_KEY = "organization-cipher-key-0123456789"

HEAD_NOT_AUTHENTICATED = "does not verify under this device's credential"


def trail_at(state_dir: Path, keys: ChainKeys = KEYS, device_id: str = DEVICE) -> AuditTrail:
    return AuditTrail(state_dir, keys=keys, device_id=device_id, organization_id=ORG, sink=None)


async def recorded(state_dir: Path, count: int, keys: ChainKeys = KEYS, device_id: str = DEVICE) -> None:
    trail = trail_at(state_dir, keys, device_id)
    await trail.open()
    try:
        for number in range(count):
            await trail.record(kiosk_event(number, ORG))
    finally:
        await trail.aclose()


async def acknowledged_by_sink(state_dir: Path, positions: range, highest: int) -> None:
    """The sink acknowledged ``positions`` answering ``highest``: kept in the store, then the file."""
    trail = trail_at(state_dir)
    await trail.open()
    try:
        for position in positions:
            await trail._db.acknowledge("sink", position, highest)
    finally:
        await trail.aclose()
    write_acknowledged(acknowledgement_path(state_dir), KEYS, DEVICE, highest)


def raw(state_dir: Path) -> sqlite3.Connection:
    return sqlite3.connect(store_path(state_dir), isolation_level=None)


def rows(state_dir: Path) -> list[tuple[int, str, str, str]]:
    db = raw(state_dir)
    try:
        return db.execute("SELECT position, event, prev_hash, hash FROM records ORDER BY position").fetchall()
    finally:
        db.close()


def delete_records_from(state_dir: Path, position: int) -> None:
    db = raw(state_dir)
    try:
        db.execute("DROP TRIGGER records_no_delete")
        db.execute("DELETE FROM records WHERE position >= ?", (position,))
    finally:
        db.close()


def copy_state(state_dir: Path, to: Path) -> None:
    """What someone with the directory keeps: every file, as it is now (the agent closed)."""
    shutil.copytree(state_dir, to)


async def older_copy_taken(state_dir: Path, *, before: int, after: int, acknowledged_after: range) -> Path:
    """``before`` records, the sink acknowledging the first two; a copy of the state directory taken
    then (its path returned); then ``after`` more records and the sink acknowledging
    ``acknowledged_after``."""
    await recorded(state_dir, before)
    await acknowledged_by_sink(state_dir, range(1, 3), highest=2)
    older = state_dir.parent / "older"
    copy_state(state_dir, older)
    await recorded(state_dir, after)
    await acknowledged_by_sink(state_dir, acknowledged_after, highest=acknowledged_after[-1])
    return older


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def reason(state_dir: Path, keys: ChainKeys = KEYS) -> str | None:
    report = verify_chain(state_dir, keys, DEVICE)
    assert not report.ok
    return report.reason


async def refused_at_open(state_dir: Path, keys: ChainKeys = KEYS) -> DamagedStoreError:
    trail = trail_at(state_dir, keys)
    with pytest.raises(DamagedStoreError) as refused:
        await trail.open()
    return refused.value


def store_put_back(state_dir: Path, copy: Path) -> None:
    """The audit store of ``copy`` in place of ``state_dir``'s (the store only, no other file)."""
    shutil.rmtree(store_path(state_dir).parent)
    shutil.copytree(store_path(copy).parent, store_path(state_dir).parent)


async def reported_and_refused(state_dir: Path, expected: str) -> None:
    """The check reports ``expected``, and the trail refuses to open saying the same."""
    assert reason(state_dir) == expected
    assert (await refused_at_open(state_dir)).problem == expected


# -- what each event carries --------------------------------------------------------------------------


async def test_events_carry_this_device_and_a_gapless_sequence_from_1_across_restarts(
    state_dir: Path,
) -> None:
    await recorded(state_dir, 3)
    await recorded(state_dir, 2)
    stored = [json.loads(text) for _, text, _, _ in rows(state_dir)]
    assert [(item["deviceId"], item["sequence"]) for item in stored] == [(DEVICE, n) for n in range(1, 6)]
    report = verify_chain(state_dir, KEYS, DEVICE)
    assert (report.ok, report.records, report.base, report.last_sequence) == (True, 5, 0, 5)


async def test_an_event_of_another_device_or_with_a_sequence_is_refused_and_nothing_stored(
    state_dir: Path,
) -> None:
    trail = trail_at(state_dir)
    await trail.open()
    try:
        other = kiosk_event(0, ORG).model_copy(update={"device_id": "kiosk-2"})
        with pytest.raises(ValueError, match=r"^deviceId: must be this trail's device$"):
            await trail.record(other)
        numbered = kiosk_event(0, ORG).model_copy(update={"sequence": 7})
        with pytest.raises(ValueError, match=r"^sequence: is given by the trail"):
            await trail.record(numbered)
        assert trail.status().records == 0
        assert await trail.record(kiosk_event(0, ORG).model_copy(update={"device_id": DEVICE})) == 1
    finally:
        await trail.aclose()


# -- (a) and (b): the head moved back or reset, without the key ----------------------------------------


async def test_last_records_removed_and_the_head_moved_back_is_reported_and_refused(state_dir: Path) -> None:
    await recorded(state_dir, 5)
    kept = rows(state_dir)[2]  # record 3
    delete_records_from(state_dir, 4)
    db = raw(state_dir)
    db.execute("UPDATE head SET records = 3, hash = ?", (kept[3],))
    db.close()
    assert reason(state_dir) == (
        "the chain's head (it says 3 records) does not verify under this device's credential: "
        "it was moved back, reset or rewritten by someone without the key"
    )
    refused = await refused_at_open(state_dir)
    assert HEAD_NOT_AUTHENTICATED in refused.problem
    assert "previous_device_credentials" in refused.advice


async def test_every_record_removed_and_the_head_reset_to_genesis_is_reported(state_dir: Path) -> None:
    await recorded(state_dir, 4)
    fresh = state_dir.parent / "fresh"
    await recorded(fresh, 0)  # an empty store's genesis head: MACed and bound to its device
    db = raw(fresh)
    genesis = db.execute("SELECT hash FROM head").fetchone()[0]
    db.close()
    delete_records_from(state_dir, 1)
    db = raw(state_dir)
    db.execute("UPDATE head SET records = 0, hash = ?", (genesis,))
    db.close()
    assert HEAD_NOT_AUTHENTICATED in (reason(state_dir) or "")
    assert "it says 0 records" in (reason(state_dir) or "")
    assert HEAD_NOT_AUTHENTICATED in (await refused_at_open(state_dir)).problem


async def test_an_empty_store_of_another_device_does_not_pass_as_this_ones(state_dir: Path) -> None:
    await recorded(state_dir, 0, ChainKeys("kiosk-2-device-credential-0123"), "kiosk-2")
    db = raw(state_dir)
    db.execute("UPDATE head SET device_id = ?", (DEVICE,))
    db.close()
    assert HEAD_NOT_AUTHENTICATED in (reason(state_dir) or "")


# -- (c): an older copy of the store put back --------------------------------------------------------------


async def test_an_older_copy_shorter_than_what_the_sink_acknowledged_is_reported(state_dir: Path) -> None:
    older = await older_copy_taken(state_dir, before=3, after=2, acknowledged_after=range(3, 6))
    store_put_back(state_dir, older)  # the store only

    expected = (
        "the trail ends at sequence 3 but the sink already acknowledged sequence 5: its last records "
        "were removed, or an older copy of the store was put back"
    )
    await reported_and_refused(state_dir, expected)


async def test_an_older_copy_as_long_as_what_the_sink_acknowledged_is_reported_by_the_file(
    state_dir: Path,
) -> None:
    # Record 6 is never delivered: lost with the rollback.
    older = await older_copy_taken(state_dir, before=5, after=1, acknowledged_after=range(3, 5))
    store_put_back(state_dir, older)

    expected = (
        "the store says the sink acknowledged up to sequence 2, audit-acknowledged.json says 4: "
        "an older copy of the store was put back (records made since are lost)"
    )
    await reported_and_refused(state_dir, expected)


async def test_a_whole_state_directory_put_back_is_not_detected_without_the_sink(state_dir: Path) -> None:
    """What the README says: the file and the store rolled back together are consistent; only
    the sink (``audit verify --against-sink``) can tell."""
    older = await older_copy_taken(state_dir, before=3, after=2, acknowledged_after=range(3, 6))
    assert verify_chain(older, KEYS, DEVICE).ok


async def test_an_altered_or_foreign_acknowledgement_file_is_reported(state_dir: Path) -> None:
    await recorded(state_dir, 2)
    await acknowledged_by_sink(state_dir, range(1, 3), highest=2)
    path = acknowledgement_path(state_dir)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "highestSequence": 0}))
    assert reason(state_dir) == (
        f"{path}: its MAC does not verify under this device's credential: altered, or written without the key"
    )
    refused = await refused_at_open(state_dir)
    assert (refused.path, "its MAC does not verify" in refused.problem) == (path, True)

    write_acknowledged(path, ChainKeys("kiosk-2-device-credential-0123"), "kiosk-2", 2)
    assert reason(state_dir) == (
        f"{path}: kept for device kiosk-2, not this device ({DEVICE}): either another device's file was put "
        "here, or user_id is not this device's ID"
    )


async def test_the_acknowledgements_kept_in_the_store_are_authenticated(state_dir: Path) -> None:
    await recorded(state_dir, 3)
    await acknowledged_by_sink(state_dir, range(1, 4), highest=3)
    db = raw(state_dir)
    db.execute("UPDATE acknowledged SET highest_sequence = 0")
    db.close()
    assert (
        reason(state_dir) == "its record of the sink's acknowledgements was altered (its MAC does not verify)"
    )


async def test_a_file_behind_the_store_is_brought_up_to_it_at_open(state_dir: Path) -> None:
    """The store is written first: a crash before the file leaves it behind, which is no rollback."""
    await recorded(state_dir, 3)
    trail = trail_at(state_dir)
    await trail.open()
    await trail._db.acknowledge("sink", 1, 3)  # the store's write, the file's not yet made
    await trail.aclose()
    # A close brings the file up to the store (a delivery cancelled between the two writes).
    assert json.loads(acknowledgement_path(state_dir).read_text())["highestSequence"] == 3
    # A crash instead: the file as written when the store began (0), behind the store.
    write_acknowledged(acknowledgement_path(state_dir), KEYS, DEVICE, 0)
    assert json.loads(acknowledgement_path(state_dir).read_text())["highestSequence"] == 0
    assert verify_chain(state_dir, KEYS, DEVICE).ok

    trail = trail_at(state_dir)
    await trail.open()
    await trail.aclose()
    kept = json.loads(acknowledgement_path(state_dir).read_text())
    assert (kept["deviceId"], kept["highestSequence"]) == (DEVICE, 3)
    assert acknowledgement_path(state_dir).stat().st_mode & 0o777 == 0o600


# -- (d): another agent's store swapped in -----------------------------------------------------------------


async def test_another_devices_store_swapped_in_is_reported_and_refused(state_dir: Path) -> None:
    await recorded(state_dir, 3)
    other = state_dir.parent / "other"
    await recorded(other, 5, ChainKeys("kiosk-2-device-credential-0123"), "kiosk-2")
    store_put_back(state_dir, other)
    expected = (
        "the store is device kiosk-2's, not this device's (kiosk-1): either another device's store was put "
        "here, or user_id is not this device's ID"
    )
    await reported_and_refused(state_dir, expected)


async def test_another_devices_store_relabelled_as_this_one_fails_at_its_first_record(
    state_dir: Path,
) -> None:
    await recorded(state_dir, 2, ChainKeys("kiosk-2-device-credential-0123"), "kiosk-2")
    db = raw(state_dir)
    db.execute("UPDATE head SET device_id = ?", (DEVICE,))
    db.close()
    report = verify_chain(state_dir, KEYS, DEVICE)
    assert (report.ok, report.first_broken) == (False, 1)


# -- (e): a record edited and the chain recomputed with the organization's key ----------------------------


@pytest.mark.parametrize(
    "organization_keys",
    [ChainKeys(CIPHER_KEY), LegacyChainKeys(CIPHER_KEY)],
    ids=["cipher-key-as-device-key", "cipher-key-as-version-2"],
)
async def test_a_chain_recomputed_with_the_organizations_key_is_reported(
    state_dir: Path, organization_keys: ChainKeys | LegacyChainKeys
) -> None:
    await recorded(state_dir, 5)
    db = raw(state_dir)
    db.execute("DROP TRIGGER records_no_update")
    records = rows(state_dir)
    prev = records[1][3]
    for position, text, _, _ in records[2:]:
        if position == 3:
            text = text.replace('"check"', '"erase"')
        digest = organization_keys.link(prev, position, text)
        db.execute(
            "UPDATE records SET event = ?, prev_hash = ?, hash = ? WHERE position = ?",
            (text, prev, digest, position),
        )
        prev = digest
    if isinstance(organization_keys, ChainKeys):
        db.execute("UPDATE head SET hash = ?, mac = ?", (prev, organization_keys.head(DEVICE, 0, 5, prev)))
    else:
        db.execute("UPDATE head SET hash = ?", (prev,))
    db.close()
    assert reason(state_dir) == (
        "record 3: content does not match its hash (edited, or written without this device's key)"
    )
    assert HEAD_NOT_AUTHENTICATED in (await refused_at_open(state_dir)).problem


# -- a rotated credential, and a new store after a damaged one -------------------------------------------


async def test_a_rotated_credential_keeps_verifying_the_old_chain(state_dir: Path) -> None:
    await recorded(state_dir, 2)
    await acknowledged_by_sink(state_dir, range(1, 3), highest=2)
    rotated = ChainKeys("kiosk-1-new-device-credential", [CREDENTIAL])
    await recorded(state_dir, 2, rotated)
    report = verify_chain(state_dir, rotated, DEVICE)
    assert (report.ok, report.records, report.acknowledged) == (True, 4, 2)
    # Without the old credential the old records (and the file it MACed) do not verify...
    only_new = ChainKeys("kiosk-1-new-device-credential")
    assert verify_chain(state_dir, only_new, DEVICE).first_broken == 1
    # ...and records 3 and 4 were signed with the new one only.
    assert verify_chain(state_dir, KEYS, DEVICE).first_broken == 3


async def test_a_store_begun_after_a_damaged_one_was_moved_aside_continues_the_sequence(
    state_dir: Path,
) -> None:
    await recorded(state_dir, 3)
    await acknowledged_by_sink(state_dir, range(1, 4), highest=3)
    path = store_path(state_dir)
    path.write_bytes(b"damaged" * 100)
    assert "not a readable audit store" in (await refused_at_open(state_dir)).problem
    path.rename(path.with_name("audit.sqlite3.damaged"))  # as the advice says

    await recorded(state_dir, 2)
    stored = [json.loads(text)["sequence"] for _, text, _, _ in rows(state_dir)]
    assert stored == [4, 5]  # never 1-3 again: the sink holds those under other events
    report = verify_chain(state_dir, KEYS, DEVICE)
    assert (report.ok, report.records, report.base, report.acknowledged) == (True, 2, 3, 3)
    # The acknowledgement file showed an earlier store: the new one says, under its MAC, that it follows it.
    assert report.origin == StoreOrigin(follows_removed=True)


async def test_a_first_store_follows_nothing(state_dir: Path) -> None:
    await recorded(state_dir, 1)
    assert verify_chain(state_dir, KEYS, DEVICE).origin == NO_ORIGIN


async def test_that_a_store_follows_a_removed_one_cannot_be_erased(state_dir: Path) -> None:
    await recorded(state_dir, 2)
    await acknowledged_by_sink(state_dir, range(1, 3), highest=2)
    shutil.rmtree(store_path(state_dir).parent)
    await recorded(state_dir, 1)
    db = raw(state_dir)
    db.execute("DROP TRIGGER origin_no_update")
    db.execute("UPDATE origin SET follows_removed = 0")
    db.close()
    assert reason(state_dir) == (
        "the chain's head (it says 1 record) does not verify under this device's credential: it was moved "
        "back, reset or rewritten by someone without the key"
    )
    db = raw(state_dir)
    db.execute("DROP TABLE origin")
    db.close()
    assert reason(state_dir) == "not a readable audit store (table origin missing)"
