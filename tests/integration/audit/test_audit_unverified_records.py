"""A record that does not verify is never delivered (issue 20, finding 6, second review: N1-N4).

Someone with the state directory (and the organization's cipher key, not the device credential)
adds or edits a waiting record: the agent's start checks every record, not only the head and
the last one, and refuses; a record changed after the start is caught right before it is sent.
On the real clinic stand-in; the kiosk's trail: sequences 1-4 delivered, 5 and 6 waiting.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from telehealth_client.audit.store import AuditDatabase
from telehealth_client.audit.trail import LegacyChainKeys, legacy_store_path, store_path
from telehealth_client.protocol import messages
from telehealth_devstack.stack import DevStack
from tests.support.audit import (
    KIOSK,
    Trails,
    four_delivered_two_waiting,
    held_by_sink,
    kiosk_event,
    restart_refused,
)
from tests.support.audit_v2_store import version_2_text, write_version_2_store

pytestmark = pytest.mark.integration

WAIT = 15.0
NOT_ITS_HASH = "content does not match its hash (edited, or written without this device's key)"


def execute(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    with closing(sqlite3.connect(str(path), isolation_level=None)) as db:
        for sql, parameters in statements:
            db.execute(sql, parameters)


def forged(stack: DevStack) -> messages.AuditEvent:
    return kiosk_event(99, stack.organization_id, actor_id="pat-forged")


def hash_at(path: Path, position: int) -> str:
    with closing(sqlite3.connect(str(path))) as db:
        return str(db.execute("SELECT hash FROM records WHERE position = ?", (position,)).fetchone()[0])


def id_at(path: Path, position: int) -> str:
    with closing(sqlite3.connect(str(path))) as db:
        return str(db.execute("SELECT id FROM records WHERE position = ?", (position,)).fetchone()[0])


async def test_n1_a_record_appended_beyond_the_head_stops_the_start_and_is_never_posted(
    stack: DevStack, trails: Trails
) -> None:
    await four_delivered_two_waiting(trails, stack)
    path, event = store_path(trails.state_dir), forged(stack)
    wire = json.dumps({**messages.encode(event), "deviceId": KIOSK, "sequence": 7}, sort_keys=True)
    execute(
        path,
        (
            "INSERT INTO records (position, id, event, prev_hash, hash) VALUES (7, ?, ?, ?, ?)",
            (event.id, wire, hash_at(path, 6), "0" * 64),
        ),
    )
    refused = await restart_refused(trails, stack)
    assert (refused.path, refused.problem) == (path, f"record 7: {NOT_ITS_HASH}")
    assert event.id not in [event_id for event_id, _ in await held_by_sink(stack)]


async def test_n2_a_waiting_record_rewritten_in_place_stops_the_start_and_is_never_posted(
    stack: DevStack, trails: Trails
) -> None:
    await four_delivered_two_waiting(trails, stack)
    path, event = store_path(trails.state_dir), forged(stack)
    record_id = id_at(path, 5)
    wire = json.dumps(
        {**messages.encode(event), "id": record_id, "deviceId": KIOSK, "sequence": 5}, sort_keys=True
    )
    execute(
        path,
        ("DROP TRIGGER records_no_update", ()),
        ("UPDATE records SET event = ? WHERE position = 5", (wire,)),
    )
    refused = await restart_refused(trails, stack)
    assert (refused.path, refused.problem) == (path, f"record 5: {NOT_ITS_HASH}")
    held = await held_by_sink(stack)
    assert [sequence for _, sequence in held] == [1, 2, 3, 4]


async def upgraded_offline(trails: Trails, stack: DevStack, count: int) -> None:
    """A genuine upgrade with the clinic out of reach: every version 2 record still waits."""
    genuine = [kiosk_event(number, stack.organization_id) for number in range(count)]
    write_version_2_store(store_path(trails.state_dir), stack.keys.cipher_key, genuine, {})
    trail = trails.unopened(None, legacy_keys=LegacyChainKeys(stack.keys.cipher_key))
    await trail.open()
    await trail.aclose()


async def test_n3_a_record_appended_to_the_set_aside_version_2_store_is_never_posted(
    stack: DevStack, trails: Trails
) -> None:
    await upgraded_offline(trails, stack, 3)
    aside, event = legacy_store_path(trails.state_dir), forged(stack)
    execute(
        aside,
        (
            "INSERT INTO records (position, id, event, prev_hash, hash) VALUES (4, ?, ?, ?, ?)",
            (event.id, version_2_text(event), hash_at(aside, 3), "0" * 64),
        ),
    )
    refused = await restart_refused(trails, stack)
    assert (refused.path, refused.problem) == (aside, f"record 4: {NOT_ITS_HASH}")
    assert await held_by_sink(stack) == []


async def test_n4_a_waiting_record_of_the_set_aside_store_edited_is_never_posted(
    stack: DevStack, trails: Trails
) -> None:
    await upgraded_offline(trails, stack, 3)
    aside, event = legacy_store_path(trails.state_dir), forged(stack)
    text = version_2_text(event).replace(event.id, id_at(aside, 2))
    execute(
        aside,
        ("DROP TRIGGER records_no_update", ()),
        ("UPDATE records SET event = ? WHERE position = 2", (text,)),
    )
    refused = await restart_refused(trails, stack)
    assert (refused.path, refused.problem) == (aside, f"record 2: {NOT_ITS_HASH}")
    assert await held_by_sink(stack) == []


async def test_a_record_edited_after_the_start_is_not_handed_out_for_delivery(
    stack: DevStack, trails: Trails
) -> None:
    await four_delivered_two_waiting(trails, stack)
    path = store_path(trails.state_dir)
    db = AuditDatabase(path, trails.keys, KIOSK)
    await db.open()
    try:
        assert [(r.position, r.verified) for r in await db.pending("sink", 0, 64)] == [(5, True), (6, True)]
        execute(
            path,
            ("DROP TRIGGER records_no_update", ()),
            ("UPDATE records SET event = replace(event, 'check', 'chec2') WHERE position = 6", ()),
        )
        assert [(r.position, r.verified) for r in await db.pending("sink", 0, 64)] == [(5, True), (6, False)]
        # Its hash rewritten to match too (only possible with the key for version 3, with the
        # cipher key for version 2): still not what verified at start.
        execute(path, ("UPDATE records SET hash = ? WHERE position = 6", ("f" * 64,)))
        assert [(r.position, r.verified) for r in await db.pending("sink", 0, 64)] == [(5, True), (6, False)]
    finally:
        await db.close()
