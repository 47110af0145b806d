"""The acknowledgement file proves the device-keyed trail ran (N6), and a file of the trail that is
not a regular file never blocks (N8): issue 20, finding 6, second review. Real CLI, real agent
trail, the clinic stand-in reachable."""

from __future__ import annotations

import os

import pytest

from telehealth_client.audit.trail import (
    AuditStoreError,
    DamagedStoreError,
    LegacyChainKeys,
    acknowledgement_path,
    store_path,
)
from telehealth_devstack.stack import DevStack
from tests.support.audit import Trails, held_by_sink, kiosk_event, remove_store, restart_refused, run
from tests.support.audit_v2_store import write_version_2_store

pytestmark = pytest.mark.integration

RAN = (
    "a version 2 store, but audit-acknowledged.json shows this device ran the device-keyed trail "
    "(nothing acknowledged by the sink yet): the device-keyed store was replaced by an older copy or "
    "by a forged version 2 store (a rollback)"
)


async def test_n6_a_forged_version_2_store_where_nothing_reached_the_sink_is_a_rollback(
    stack: DevStack, trails: Trails
) -> None:
    offline = await trails.trail(None)  # the device-keyed trail ran; nothing ever reached the sink
    for number in range(3):
        await offline.record(kiosk_event(number, stack.organization_id))
    await offline.aclose()
    assert acknowledgement_path(trails.state_dir).exists()  # written when the store began

    forged = kiosk_event(99, stack.organization_id, actor_id="pat-forged")
    remove_store(trails.state_dir)
    write_version_2_store(store_path(trails.state_dir), stack.keys.cipher_key, [forged], {})
    for args in (("verify",), ("verify", "--against-sink")):
        code, out, _ = await run(*args, "--state-dir", str(trails.state_dir), env=trails.environment())
        assert (code, out) == (1, f"audit chain broken: {RAN}\n")
    code, _, err = await run("status", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert code == 1 and RAN in err
    refused = await restart_refused(trails, stack)
    assert (refused.path, refused.problem) == (store_path(trails.state_dir), RAN)
    assert await held_by_sink(stack) == []


async def test_n8_a_fifo_in_place_of_the_acknowledgement_file_is_reported_not_waited_on(
    stack: DevStack, trails: Trails
) -> None:
    trail = await trails.trail(trails.clinic())
    await trail.record(kiosk_event(0, stack.organization_id))
    assert await trail.wait_delivered(15.0)
    await trail.aclose()
    path = acknowledgement_path(trails.state_dir)
    path.unlink()
    os.mkfifo(path)
    problem = f"{path}: not a regular file (replaced by something else)"
    code, out, _ = await run("verify", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert (code, out) == (1, f"audit chain broken: {problem}\n")
    code, _, err = await run("status", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert code == 1 and problem in err
    refused = await restart_refused(trails, stack)
    assert (refused.path, refused.problem) == (path, "not a regular file (replaced by something else)")


async def test_n8_a_fifo_in_place_of_the_store_is_refused_not_waited_on(
    stack: DevStack, trails: Trails
) -> None:
    trail = await trails.trail(None)
    await trail.aclose()
    remove_store(trails.state_dir)
    os.mkfifo(store_path(trails.state_dir))
    code, _, err = await run("verify", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert (code, err) == (2, f"telehealth-agent: audit: {store_path(trails.state_dir)}: not a file\n")
    unopened = trails.unopened(trails.clinic(), legacy_keys=LegacyChainKeys(stack.keys.cipher_key))
    with pytest.raises(AuditStoreError) as refused:
        await unopened.open()
    assert not isinstance(refused.value, DamagedStoreError)
    assert (
        str(refused.value)
        == f"{store_path(trails.state_dir)}: not a regular file (replaced by something else)"
    )
