"""An agent upgraded over a version 2 audit store delivers what waited in it to the real clinic
stand-in's sink, as it was recorded and before anything new, and goes on with its own trail."""

from __future__ import annotations

import json

import pytest

from telehealth_client.audit.trail import AuditStatus, LegacyChainKeys, store_path
from telehealth_devstack.stack import DevStack
from tests.support.audit import Trails, as_recorded, kiosk_event, run, sink_events
from tests.support.audit_v2_store import write_version_2_store

pytestmark = pytest.mark.integration

WAIT = 15.0


async def test_what_waited_in_a_version_2_store_reaches_the_sink_first_and_nothing_is_lost(
    stack: DevStack, trails: Trails
) -> None:
    waiting = [kiosk_event(number, stack.organization_id) for number in range(4)]
    # Record 1 was delivered everywhere before the upgrade, record 2 to the sink only.
    write_version_2_store(
        store_path(trails.state_dir), stack.keys.cipher_key, waiting, {1: ("sink", "channel"), 2: ("sink",)}
    )
    # The cipher key it was keyed with, as Durable.open gives it.
    trail = trails.unopened(trails.clinic(), legacy_keys=LegacyChainKeys(stack.keys.cipher_key))
    await trail.open()
    later = kiosk_event(9, stack.organization_id)
    assert await trail.record(later) == 1
    assert await trail.wait_delivered(WAIT)

    stored = await sink_events(stack)
    # As version 2 recorded them (no deviceId, no sequence), then this device's first.
    assert [event["id"] for event in stored] == [waiting[2].id, waiting[3].id, later.id]
    assert [("deviceId" in event, "sequence" in event) for event in stored[:2]] == [(False, False)] * 2
    assert stored[2] == as_recorded(later, 1)
    assert trail.legacy_status() == AuditStatus(records=4, awaiting_sink=0, awaiting_channel=3)
    await trail.aclose()

    code, out, _ = await run("status", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert code == 0
    assert "version 2 store set aside (audit-v2.sqlite3): waiting for the audit sink: 0" in out.splitlines()
    assert "waiting for the audit sink: 0" in out.splitlines()
    code, out, _ = await run("verify", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert (code, out.splitlines()[0]) == (0, "version 2 store set aside (audit-v2.sqlite3) ok: 4 records")
    assert json.loads((trails.state_dir / "audit-acknowledged.json").read_text())["highestSequence"] == 1
