"""A store that is gone while ``audit-acknowledged.json`` (or the sink) shows an earlier one existed, on
the real clinic stand-in and checked by the real ``telehealth-agent audit``.

Before the agent restarts, ``verify`` and ``status`` report the store gone (exit 1), not a wrong
path. The restarting agent logs an error and begins a new store whose authenticated head records
that it follows a removed one; from then on every ``verify`` says so in a note (exit 0: a store
moved aside on purpose, as the README advises for a damaged one, must not fail forever), and
``--against-sink`` says whether the sink holds every sequence up to where the new store began.
The kiosk's trail here: sequences 1-4 delivered, 5-7 still waiting when the store is removed.
"""

from __future__ import annotations

import logging
import shutil

import pytest

from telehealth_client.audit.trail import acknowledgement_path, store_path
from telehealth_devstack.stack import DevStack
from tests.support.audit import PROVIDER, Trails, kiosk_event, run, sink_events

pytestmark = pytest.mark.integration

WAIT = 15.0
GONE = (
    "the store audit.sqlite3 is gone but audit-acknowledged.json shows sequences up to 4 were "
    "acknowledged: it was deleted or moved (what it had not delivered is lost unless it is put back)"
)
NOTE = (
    "note: this store was begun at sequence 5 after an earlier store of this device was deleted or moved "
    "aside (the acknowledgement file or the sink showed sequences up to 4): what that store recorded "
    "after sequence 4 and had not delivered is lost unless it is found; `telehealth-agent audit verify "
    "--against-sink` tells whether the sink holds every sequence up to 4"
)


async def four_delivered_three_waiting(trails: Trails, stack: DevStack) -> None:
    online = await trails.trail(trails.clinic())
    for number in range(4):
        await online.record(kiosk_event(number, stack.organization_id))
    assert await online.wait_delivered(WAIT)
    await online.aclose()
    offline = await trails.trail(None)
    for number in range(4, 7):
        await offline.record(kiosk_event(number, stack.organization_id))
    await offline.aclose()


def remove_audit_directory(trails: Trails) -> None:
    shutil.rmtree(store_path(trails.state_dir).parent)  # rm -r state/audit


async def test_3_a_deleted_store_is_reported_by_verify_and_status_not_taken_for_a_wrong_path(
    stack: DevStack, trails: Trails
) -> None:
    await four_delivered_three_waiting(trails, stack)
    remove_audit_directory(trails)
    environment = trails.environment()
    for against_sink in ((), ("--against-sink",)):
        code, out, err = await run(
            "verify", *against_sink, "--state-dir", str(trails.state_dir), env=environment
        )
        assert (code, out, err) == (1, f"audit chain broken: {GONE}\n", "")
    code, out, err = await run("status", "--state-dir", str(trails.state_dir), env=environment)
    assert (code, out) == (1, "")
    assert err == (
        f"telehealth-agent: audit: {store_path(trails.state_dir)}: {GONE}; what waits for delivery cannot "
        "be told from it (`telehealth-agent audit verify` names the problem)\n"
    )


async def test_3_after_the_restart_every_verify_says_the_store_follows_a_removed_one(
    stack: DevStack, trails: Trails, caplog: pytest.LogCaptureFixture
) -> None:
    await four_delivered_three_waiting(trails, stack)
    remove_audit_directory(trails)

    caplog.set_level(logging.ERROR, logger="telehealth_client.audit.trail")
    trail = await trails.trail(trails.clinic())
    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert errors == [
        f"audit store {store_path(trails.state_dir)} was not there: {NOTE.removeprefix('note: ')}"
    ]
    assert await trail.record(kiosk_event(9, stack.organization_id)) == 1
    assert await trail.wait_delivered(WAIT)
    await trail.aclose()
    assert [event["sequence"] for event in await sink_events(stack)] == [1, 2, 3, 4, 5]

    environment = trails.environment()
    chain_ok = (
        "audit chain ok: 1 record, sequence 5 of device kiosk-1; the highest sequence the sink acknowledged "
        "is 5"
    )
    for _ in range(2):  # on every run, not once
        code, out, err = await run("verify", "--state-dir", str(trails.state_dir), env=environment)
        assert (code, out.splitlines(), err) == (0, [chain_ok, NOTE], "")
    code, out, _ = await run(
        "verify", "--against-sink", "--state-dir", str(trails.state_dir), env=environment
    )
    assert (code, out.splitlines()) == (
        0,
        [
            chain_ok,
            NOTE,
            "audit sink agrees: it holds device kiosk-1's sequences up to 5 with no gap below, and the trail "
            "ends at 5; it holds every sequence up to 4, where this store began after a removed one (only "
            "what that store never delivered is missing)",
        ],
    )
    code, out, _ = await run("status", "--state-dir", str(trails.state_dir), env=environment)
    assert (code, out.splitlines()[-1]) == (0, NOTE)


async def test_3_a_sink_short_of_where_the_new_store_began_is_reported(
    stack: DevStack, trails: Trails
) -> None:
    """Sequence 1 was refused by the sink (the kiosk may not post a provider's event), 2 and 3 were
    taken: the sink's gapless head stays 0 while the acknowledgement file keeps 3. A store begun
    after the old one was removed starts at 4, and ``--against-sink`` does not call that agreement."""
    trail = await trails.trail(trails.clinic())
    await trail.record(kiosk_event(0, stack.organization_id, actor_id=PROVIDER, actor_role="provider"))
    for number in range(1, 3):
        await trail.record(kiosk_event(number, stack.organization_id))
    assert await trail.wait_delivered(WAIT)
    await trail.aclose()
    remove_audit_directory(trails)
    restarted = await trails.trail(trails.clinic())
    await restarted.aclose()

    code, out, _ = await run(
        "verify", "--against-sink", "--state-dir", str(trails.state_dir), env=trails.environment()
    )
    assert (code, out.splitlines()[-1]) == (
        1,
        "audit sink short of where this store began: the sink holds device kiosk-1's sequences with no gap "
        "only up to 0, and this store began after sequence 3 (it follows a removed store): sequence 1 is "
        "not at the sink (refused by the sink, or lost with the removed store)",
    )


async def test_a_store_moved_aside_with_its_acknowledgement_file_is_still_noted_from_the_sinks_head(
    stack: DevStack, trails: Trails
) -> None:
    await four_delivered_three_waiting(trails, stack)
    remove_audit_directory(trails)
    acknowledgement_path(trails.state_dir).unlink()  # only the sink still knows
    trail = await trails.trail(trails.clinic())
    await trail.aclose()
    code, out, _ = await run("verify", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert (code, out.splitlines()[-1]) == (0, NOTE)
