"""A trail begun while the sink could not be asked for its head (the clinic down at a kiosk's first
start), on a device whose earlier records the sink already holds (a re-imaged kiosk keeping its
device credential): placed after the sink's head at first contact, the records written offline
re-chained there, nothing delivered before; and the mark that allows it cannot be forged onto a
store that was rolled back.

Real parts: the clinic stand-in's sink reached through a TCP hop the test cuts, the store on disk.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telehealth_client.audit.trail import AuditTrail, DamagedStoreError, store_path, verify_chain
from telehealth_client.protocol.messages import AuditEvent
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.stack import DevStack
from tests.support.audit import CountingClinic, Trails, kiosk_event, run, sink_events

pytestmark = pytest.mark.integration

WAIT = 15.0


async def sink_holds_three_then_reimaged(trails: Trails, stack: DevStack) -> None:
    """The sink holds the kiosk's sequences 1-3; its state directory is then gone (re-imaged)."""
    trail = await trails.trail(trails.clinic())
    for number in range(3):
        await trail.record(kiosk_event(number, stack.organization_id))
    assert await trail.wait_delivered(WAIT)
    await trail.aclose()
    shutil.rmtree(trails.state_dir)


@contextlib.asynccontextmanager
async def reimaged_with_the_clinic_cut(trails: Trails, stack: DevStack) -> AsyncIterator[CuttableLink]:
    """``sink_holds_three_then_reimaged``, then the clinic reached only through a link, cut."""
    await sink_holds_three_then_reimaged(trails, stack)
    assert stack.clinic is not None
    async with CuttableLink(f"127.0.0.1:{stack.clinic.port}") as link:
        link.cut()
        yield link


async def one_record_offline(
    trails: Trails, link: CuttableLink, event: AuditEvent
) -> tuple[CountingClinic, AuditTrail, AuditEvent]:
    """A trail begun through the cut ``link`` that records ``event`` (its sequence 1), then the
    link restored: its sink (counting), the trail and the event."""
    sink = trails.clinic(f"http://{link.origin}")
    trail = await trails.trail(sink)
    assert await trail.record(event) == 1
    link.restore()
    return sink, trail, event


def sequences(events: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(event["id"], event["sequence"]) for event in events]


async def test_records_written_before_the_sinks_head_was_known_are_re_chained_after_it_at_the_next_start(
    stack: DevStack, trails: Trails, caplog: pytest.LogCaptureFixture
) -> None:
    async with reimaged_with_the_clinic_cut(trails, stack) as link:
        offline = await trails.trail(trails.clinic(f"http://{link.origin}"))
        assert offline.head_error is not None
        events = [kiosk_event(10 + number, stack.organization_id) for number in range(2)]
        assert [await offline.record(event) for event in events] == [1, 2]
        assert not await offline.wait_delivered(0.0)  # nothing leaves before the head is known
        await offline.aclose()
    assert (offline.status().base, offline.status().awaiting_sink) == (0, 2)
    code, out, _ = await run(
        "verify", "--against-sink", "--state-dir", str(trails.state_dir), env=trails.environment()
    )
    assert (code, out.splitlines()[-1]) == (
        0,
        "audit trail begun without the sink's head: the sink holds sequence 3 of device kiosk-1; the "
        "agent's next start that reaches it places the trail's 2 records after it (nothing of it was "
        "delivered)",
    )

    trail = await trails.trail(trails.clinic())  # the clinic answers: placed after its head
    assert trail.head_error is None
    assert (trail.status().base, trail.status().records) == (3, 2)
    assert await trail.wait_delivered(WAIT)
    held = await sink_events(stack)
    assert sequences(held)[3:] == [(events[0].id, 4), (events[1].id, 5)]
    assert [event["sequence"] for event in held] == [1, 2, 3, 4, 5]  # none refused as re-used
    await trail.aclose()
    report = verify_chain(trails.state_dir, trails.keys, trails.device_id)
    assert (report.ok, report.base, report.records, report.acknowledged) == (True, 3, 2, 5)
    assert any("re-chained as sequences 4-5 (were 1-2" in record.message for record in caplog.records)


async def test_the_sink_coming_back_during_the_run_places_the_trail_then_delivers(
    stack: DevStack, trails: Trails
) -> None:
    async with reimaged_with_the_clinic_cut(trails, stack) as link:
        sink, trail, event = await one_record_offline(trails, link, kiosk_event(20, stack.organization_id))
        await trail.reach_sink()
        assert trail.head_error is None
        assert await trail.wait_delivered(WAIT)
        assert sink.failures == 0  # nothing was posted under its old sequence
        assert sequences(await sink_events(stack))[3:] == [(event.id, 4)]
        after = kiosk_event(21, stack.organization_id)
        assert await trail.record(after) == 2
        assert await trail.wait_delivered(WAIT)
        assert sequences(await sink_events(stack))[4:] == [(after.id, 5)]


async def test_left_to_itself_the_trail_asks_for_the_head_until_the_sink_answers_then_delivers(
    stack: DevStack, trails: Trails
) -> None:
    """No caller drives it (``drive_sink_head``): the trail asks again with its back-off."""
    async with reimaged_with_the_clinic_cut(trails, stack) as link:
        sink, trail, event = await one_record_offline(trails, link, kiosk_event(40, stack.organization_id))
        assert await trail.wait_delivered(WAIT)
        assert (trail.head_error, sink.failures) == (None, 0)
        assert sequences(await sink_events(stack))[3:] == [(event.id, 4)]


async def test_an_empty_trail_begun_offline_just_continues_after_the_sinks_head(
    stack: DevStack, trails: Trails
) -> None:
    await sink_holds_three_then_reimaged(trails, stack)
    offline = await trails.trail(trails.clinic("http://127.0.0.1:9"))
    assert offline.head_error is not None
    await offline.aclose()

    trail = await trails.trail(trails.clinic())
    event = kiosk_event(30, stack.organization_id)
    assert await trail.record(event) == 1
    assert await trail.wait_delivered(WAIT)
    assert sequences(await sink_events(stack))[3:] == [(event.id, 4)]


async def test_a_rolled_back_store_marked_as_begun_offline_by_hand_is_still_refused(
    stack: DevStack, trails: Trails
) -> None:
    """The mark is under the head's MAC: added to an older copy put back, it does not turn the
    rollback into a re-chaining."""
    trail = await trails.trail(trails.clinic())
    for number in range(2):
        await trail.record(kiosk_event(number, stack.organization_id))
    assert await trail.wait_delivered(WAIT)
    await trail.aclose()
    older = trails.state_dir.parent / "older"
    shutil.copytree(trails.state_dir, older)
    trail = await trails.trail(trails.clinic())
    await trail.record(kiosk_event(2, stack.organization_id))
    assert await trail.wait_delivered(WAIT)
    await trail.aclose()
    shutil.rmtree(trails.state_dir)
    shutil.copytree(older, trails.state_dir)

    path: Path = store_path(trails.state_dir)
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE unanchored (singleton INTEGER PRIMARY KEY CHECK (singleton = 1));"
        "INSERT INTO unanchored (singleton) VALUES (1);"
    )
    db.close()
    with pytest.raises(DamagedStoreError) as refused:
        await trails.trail(trails.clinic())
    assert "does not verify under this device's credential" in refused.value.problem
    assert [event["sequence"] for event in await sink_events(stack)] == [1, 2, 3]


async def test_the_mark_removed_by_hand_from_a_store_begun_offline_is_detected(
    stack: DevStack, trails: Trails
) -> None:
    """Unmarking is caught as well: the store no longer matches its head's MAC."""
    offline = await trails.trail(trails.clinic("http://127.0.0.1:9"))
    assert await offline.record(kiosk_event(50, stack.organization_id)) == 1
    await offline.aclose()
    assert verify_chain(trails.state_dir, trails.keys, trails.device_id).ok  # marked, and whole
    db = sqlite3.connect(store_path(trails.state_dir))
    db.execute("DROP TABLE unanchored")
    db.commit()
    db.close()
    with pytest.raises(DamagedStoreError) as refused:
        await trails.trail(trails.clinic())
    assert "does not verify under this device's credential" in refused.value.problem
    assert not verify_chain(trails.state_dir, trails.keys, trails.device_id).ok
