"""The sink's acknowledgements on the real clinic stand-in: kept in the store and the file beside it,
asked again at start, and compared by ``audit verify --against-sink``, which catches a whole state
directory put back to an older copy (the local checks cannot: the copy is consistent)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from telehealth_client.audit.trail import (
    DamagedStoreError,
    acknowledgement_path,
    store_path,
    verify_chain,
)
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.stack import DevStack
from tests.support.audit import Trails, kiosk_event, run, sink_events

pytestmark = pytest.mark.integration

WAIT = 15.0


async def delivered(trails: Trails, stack: DevStack, count: int, start: int = 0) -> None:
    """``count`` more events recorded and acknowledged by the sink; the trail closed after."""
    trail = await trails.trail(trails.clinic())
    for number in range(start, start + count):
        await trail.record(kiosk_event(number, stack.organization_id))
    assert await trail.wait_delivered(WAIT)
    await trail.aclose()


def put_back(older: Path, state_dir: Path) -> None:
    shutil.rmtree(state_dir)
    shutil.copytree(older, state_dir)


async def test_the_sinks_acknowledgements_are_kept_in_the_store_and_beside_it(
    stack: DevStack, trails: Trails
) -> None:
    await delivered(trails, stack, 3)
    kept = json.loads(acknowledgement_path(trails.state_dir).read_text())
    assert (kept["deviceId"], kept["highestSequence"]) == (trails.device_id, 3)
    report = verify_chain(trails.state_dir, trails.keys, trails.device_id)
    assert (report.ok, report.records, report.acknowledged) == (True, 3, 3)
    assert (await trails.clinic().audit_head(trails.device_id)).highest_sequence == 3
    stored = await sink_events(stack)
    assert [(event["deviceId"], event["sequence"]) for event in stored] == [
        (trails.device_id, n) for n in (1, 2, 3)
    ]

    code, out, _ = await run(
        "verify", "--against-sink", "--state-dir", str(trails.state_dir), env=trails.environment()
    )
    assert (code, out.splitlines()) == (
        0,
        [
            "audit chain ok: 3 records, sequences 1-3 of device kiosk-1; the highest sequence the sink "
            "acknowledged is 3",
            "audit sink agrees: it holds device kiosk-1's sequences up to 3 with no gap below, and the trail "
            "ends at 3",
        ],
    )


async def test_verify_against_the_sink_catches_a_whole_state_directory_put_back(
    stack: DevStack, trails: Trails
) -> None:
    await delivered(trails, stack, 2)
    older = trails.state_dir.parent / "older"
    shutil.copytree(trails.state_dir, older)
    await delivered(trails, stack, 3, start=2)
    put_back(older, trails.state_dir)  # the store and the acknowledgement file, consistent

    environment = trails.environment()
    code, out, _ = await run("verify", "--state-dir", str(trails.state_dir), env=environment)
    assert code == 0  # what the README says: not detectable without the sink
    code, out, err = await run(
        "verify", "--against-sink", "--state-dir", str(trails.state_dir), env=environment
    )
    assert (code, err) == (1, "")
    assert out.splitlines()[-1] == (
        "audit trail behind the sink: the sink holds sequence 5 of device kiosk-1, the trail ends at 2: the "
        "state directory (or the store) was put back to an older copy, or records were removed"
    )

    # And the agent, asking the sink at start, does not append sequences the sink already holds.
    trail = trails.unopened(trails.clinic())
    with pytest.raises(DamagedStoreError) as refused:
        await trail.open()
    assert refused.value.path == store_path(trails.state_dir)
    assert refused.value.problem == (
        "the sink already holds sequence 5 of this device but the trail ends at 2: the state directory was "
        "put back to an older copy, or records were removed"
    )


async def test_a_store_moved_aside_continues_after_the_sinks_head(stack: DevStack, trails: Trails) -> None:
    await delivered(trails, stack, 3)
    path = store_path(trails.state_dir)
    shutil.move(path.parent, trails.state_dir / "audit.moved-aside")
    acknowledgement_path(trails.state_dir).unlink()  # only the sink still knows

    await delivered(trails, stack, 2, start=3)
    stored = await sink_events(stack)
    assert [event["sequence"] for event in stored] == [1, 2, 3, 4, 5]  # none refused as re-used
    report = verify_chain(trails.state_dir, trails.keys, trails.device_id)
    assert (report.ok, report.records, report.base, report.acknowledged) == (True, 2, 3, 5)


async def test_verify_against_a_sink_out_of_reach_says_only_the_local_checks_were_made(
    stack: DevStack, trails: Trails
) -> None:
    await delivered(trails, stack, 1)
    environment = {**trails.environment(), "TELEHEALTH_CLINIC_URL": "http://127.0.0.1:9"}
    code, out, _ = await run(
        "verify", "--against-sink", "--state-dir", str(trails.state_dir), env=environment
    )
    assert code == 3
    assert out.splitlines()[-1].startswith(
        "the audit sink could not be asked (audit-head: clinic backend unreachable"
    )
    assert out.splitlines()[-1].endswith("): only the local checks were made")


async def test_a_sequence_re_used_after_a_rollback_the_agent_could_not_see_is_refused_and_kept(
    stack: DevStack, trails: Trails, caplog: pytest.LogCaptureFixture
) -> None:
    """The clinic out of reach at start: the put-back trail goes on from sequence 3, which the sink
    already holds under another event. The sink refuses it (409); the event is kept as refused, the
    log says what it means, and ``--against-sink`` still reports the rollback."""
    await delivered(trails, stack, 2)
    older = trails.state_dir.parent / "older"
    shutil.copytree(trails.state_dir, older)
    await delivered(trails, stack, 3, start=2)
    put_back(older, trails.state_dir)
    assert stack.clinic is not None
    async with CuttableLink(f"127.0.0.1:{stack.clinic.port}") as link:
        link.cut()
        sink = trails.clinic(f"http://{link.origin}")
        trail = await trails.trail(sink)
        again = kiosk_event(7, stack.organization_id)
        assert await trail.record(again) == 3
        await sink.wait_failures(1)
        link.restore()
        assert await trail.wait_delivered(WAIT)
    assert trail.status().refused_sink == 1
    assert again.id not in [event["id"] for event in await sink_events(stack)]
    assert any(
        "run telehealth-agent audit verify --against-sink" in record.message for record in caplog.records
    )
    await trail.aclose()

    code, out, _ = await run(
        "verify", "--against-sink", "--state-dir", str(trails.state_dir), env=trails.environment()
    )
    assert (code, out.splitlines()[-1].split(":")[0]) == (1, "audit trail behind the sink")
