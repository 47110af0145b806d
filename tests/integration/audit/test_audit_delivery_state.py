"""What the audit trail still has to deliver cannot be lost by editing the store's delivery
bookkeeping: a record with no acknowledgement is waiting, whatever else the file holds."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from telehealth_client.audit.trail import AuditStatus, read_status, store_path
from telehealth_devstack.stack import DevStack
from tests.support.audit import Trails, kiosk_event, sink_events

pytestmark = pytest.mark.integration

WAIT = 15.0


def clear_delivery_bookkeeping(state_dir: Path) -> None:
    """Empty every table of the store but the chain itself (records, head and the origin its MAC
    covers) and the sink's acknowledgements kept beside it (evidence, whose removal ``audit verify``
    reports), as someone with the file could."""
    with closing(sqlite3.connect(store_path(state_dir), isolation_level=None)) as db:
        tables = [
            str(name)
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if name not in ("records", "head", "origin", "acknowledged")
        ]
        assert tables, "the store keeps its delivery state in a table of its own"
        for table in tables:
            db.execute(f"DELETE FROM {table}")  # names read from the store itself


async def test_records_still_waiting_are_delivered_whatever_happened_to_the_bookkeeping(
    stack: DevStack, trails: Trails
) -> None:
    events = await trails.record_offline()
    clear_delivery_bookkeeping(trails.state_dir)
    assert read_status(trails.state_dir) == AuditStatus(records=3, awaiting_sink=3, awaiting_channel=3)

    trail = await trails.trail(trails.clinic())
    assert trail.status().awaiting_sink == 3
    assert await trail.wait_delivered(WAIT)
    assert [event["id"] for event in await sink_events(stack)] == [event.id for event in events]


async def test_lost_acknowledgements_mean_sending_again_not_losing(stack: DevStack, trails: Trails) -> None:
    sink = trails.clinic()
    trail = await trails.trail(sink)
    events = [kiosk_event(number, stack.organization_id) for number in range(2)]
    for event in events:
        await trail.record(event)
    assert await trail.wait_delivered(WAIT)
    await trail.aclose()
    assert read_status(trails.state_dir).awaiting_sink == 0

    clear_delivery_bookkeeping(trails.state_dir)
    assert read_status(trails.state_dir).awaiting_sink == 2
    again = trails.clinic()
    trail = await trails.trail(again)
    assert await trail.wait_delivered(WAIT)
    assert dict(again.acknowledged) == {event.id: 1 for event in events}  # sent again
    # The sink keeps one copy per id.
    assert [event["id"] for event in await sink_events(stack)] == [event.id for event in events]
