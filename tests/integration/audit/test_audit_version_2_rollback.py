"""Rolling the trail back through the version 2 upgrade path, on the real clinic stand-in, checked by the
real ``telehealth-agent audit`` and refused by the restarting agent.

A version 2 store is keyed by the organization's cipher key, which every kiosk and cart holds, so
anyone with the state directory and that key can write one. The upgrade is trusted only on a device
that never ran the device-keyed trail; the version 3 store records (under its MACed head) the one
it set aside. The kiosk's trail here: sequences 1-4 delivered (the sink and
``audit-acknowledged.json`` say 4), 5 and 6 still waiting.
"""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from telehealth_client.audit.trail import (
    LegacyChainKeys,
    acknowledgement_path,
    audit_event,
    legacy_store_path,
    store_path,
)
from telehealth_client.protocol import messages
from telehealth_devstack.stack import DevStack
from tests.support.audit import (
    PROVIDER,
    WAIT,
    Trails,
    four_delivered_two_waiting,
    held_by_sink,
    kiosk_event,
    remove_sqlite_file,
    remove_store,
    restart_refused,
    run,
    run_agent,
)
from tests.support.audit_v2_store import write_version_2_store

pytestmark = pytest.mark.integration

ROLLED_BACK = (
    "the device-keyed store was replaced by an older copy or by a forged version 2 store (a rollback)"
)


def forged_phi_access(stack: DevStack) -> messages.AuditEvent:
    """What the review planted: the cart's provider reading a file (a false attribution)."""
    return audit_event(
        "PHI_FILE_ACCESSED",
        organization_id=stack.organization_id,
        actor_id=PROVIDER,
        actor_role="provider",
        resource_type="file",
        resource_id="file-0042",
        action="read",
    )


def user_version(path: Path) -> int:
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


# -- 1(a): the store deleted and an empty version 2 store dropped beside it, without any key ------------

STORE_GONE = (
    "audit chain broken: the store audit.sqlite3 is gone but audit-acknowledged.json shows sequences up "
    "to 4 were acknowledged: it was deleted or moved (what it had not delivered is lost unless it is put "
    "back)\n"
)


async def empty_version_2_beside_a_deleted_store(trails: Trails, stack: DevStack) -> None:
    await four_delivered_two_waiting(trails, stack)
    remove_store(trails.state_dir)
    # An empty chain has no MAC to check: any key will do.
    write_version_2_store(legacy_store_path(trails.state_dir), "any-key-at-all-0123456789", [], {})


async def test_1a_an_empty_version_2_store_in_place_of_the_deleted_store_is_reported(
    stack: DevStack, trails: Trails
) -> None:
    await empty_version_2_beside_a_deleted_store(trails, stack)
    environment = trails.environment()
    for against_sink in ((), ("--against-sink",)):
        code, out, err = await run(
            "verify", *against_sink, "--state-dir", str(trails.state_dir), env=environment
        )
        assert (code, out, err) == (1, STORE_GONE, "")
    code, out, err = await run("status", "--state-dir", str(trails.state_dir), env=environment)
    assert (code, out) == (1, "")
    assert err == (
        f"telehealth-agent: audit: {store_path(trails.state_dir)}: "
        f"{STORE_GONE.removeprefix('audit chain broken: ').rstrip()}; what waits for delivery cannot be "
        "told from it (`telehealth-agent audit verify` names the problem)\n"
    )


async def test_1a_the_agent_does_not_restart_on_it_nor_begin_a_store_over_the_waiting_events(
    stack: DevStack, trails: Trails
) -> None:
    await empty_version_2_beside_a_deleted_store(trails, stack)
    before = await held_by_sink(stack)
    refused = await restart_refused(trails, stack)
    assert refused.path == legacy_store_path(trails.state_dir)
    assert refused.problem == (
        "a version 2 store that no device-keyed store of this device set aside (the device-keyed store "
        "that would record it is gone): planted, or left from a removed store (anyone with the "
        "organization's cipher key can write one); it is not delivered"
    )
    assert not store_path(trails.state_dir).exists()  # no new store begun at sequence 5
    assert await held_by_sink(stack) == before
    code, out, _ = await run("verify", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert (code, out) == (1, STORE_GONE)


async def test_1a_with_the_acknowledgement_file_deleted_too_the_sink_tells(
    stack: DevStack, trails: Trails
) -> None:
    await empty_version_2_beside_a_deleted_store(trails, stack)
    acknowledgement_path(trails.state_dir).unlink()
    environment = trails.environment()

    code, out, _ = await run("verify", "--state-dir", str(trails.state_dir), env=environment)
    assert code == 0  # the README: without the sink it looks like a device that never ran this version
    assert out.splitlines()[0] == "version 2 store set aside (audit-v2.sqlite3) ok: 0 records"
    code, out, _ = await run(
        "verify", "--against-sink", "--state-dir", str(trails.state_dir), env=environment
    )
    assert (code, out.splitlines()[-1]) == (
        1,
        "audit trail behind the sink: the store audit.sqlite3 is gone but the sink holds sequence 4 of "
        "device kiosk-1: it was deleted or moved (what it had not delivered is lost unless it is put back)",
    )
    refused = await restart_refused(trails, stack)
    assert refused.path == legacy_store_path(trails.state_dir)
    assert not store_path(trails.state_dir).exists()


# -- 1(b): the store replaced by a version 2 store forged with the organization's cipher key ------------

FORGED_IN_PLACE = (
    "a version 2 store, but audit-acknowledged.json shows this device's device-keyed trail had sequences "
    f"up to 4 acknowledged by the sink: {ROLLED_BACK}"
)


async def forged_version_2_in_place(trails: Trails, stack: DevStack) -> messages.AuditEvent:
    await four_delivered_two_waiting(trails, stack)
    forged = kiosk_event(99, stack.organization_id)
    remove_store(trails.state_dir)
    write_version_2_store(store_path(trails.state_dir), stack.keys.cipher_key, [forged], {})
    return forged


async def test_1b_a_forged_version_2_store_in_place_of_the_device_keyed_one_is_reported(
    stack: DevStack, trails: Trails
) -> None:
    await forged_version_2_in_place(trails, stack)
    environment = trails.environment()
    for against_sink in ((), ("--against-sink",)):
        code, out, err = await run(
            "verify", *against_sink, "--state-dir", str(trails.state_dir), env=environment
        )
        assert (code, out, err) == (1, f"audit chain broken: {FORGED_IN_PLACE}\n", "")
    code, out, err = await run("status", "--state-dir", str(trails.state_dir), env=environment)
    assert (code, out) == (1, "")
    assert err.startswith(f"telehealth-agent: audit: {store_path(trails.state_dir)}: {FORGED_IN_PLACE}; ")


async def test_1b_the_agent_refuses_to_restart_on_it_and_delivers_nothing(
    stack: DevStack, trails: Trails
) -> None:
    forged = await forged_version_2_in_place(trails, stack)
    before = await held_by_sink(stack)
    refused = await restart_refused(trails, stack)
    assert (refused.path, refused.problem) == (store_path(trails.state_dir), FORGED_IN_PLACE)
    assert refused.advice.startswith("put back the device-keyed store (audit.sqlite3) this device wrote")
    # Nothing set aside, no new store over sequences 5 and 6, nothing delivered.
    assert not legacy_store_path(trails.state_dir).exists()
    assert user_version(store_path(trails.state_dir)) == 2  # left as it was
    assert await held_by_sink(stack) == before
    assert forged.id not in [event_id for event_id, _ in before]

    # The agent itself (`telehealth-agent run` against the stand-in) says the same and stops.
    code, out, err = await run_agent(trails.state_dir, trails.environment())
    assert code == 1
    failure = [line for line in (out + err).splitlines() if "start failed" in line]
    assert len(failure) == 1, out + err
    assert f"{store_path(trails.state_dir)}: {FORGED_IN_PLACE}: put back" in failure[0]
    assert await held_by_sink(stack) == before
    code, out, _ = await run(
        "verify", "--against-sink", "--state-dir", str(trails.state_dir), env=trails.environment()
    )
    assert (code, out) == (1, f"audit chain broken: {FORGED_IN_PLACE}\n")


async def test_1b_with_the_acknowledgement_file_deleted_too_the_sink_tells(
    stack: DevStack, trails: Trails
) -> None:
    await forged_version_2_in_place(trails, stack)
    acknowledgement_path(trails.state_dir).unlink()
    environment = trails.environment()

    code, _, _ = await run("verify", "--state-dir", str(trails.state_dir), env=environment)
    assert code == 0  # the README: not detectable without the sink
    code, out, _ = await run(
        "verify", "--against-sink", "--state-dir", str(trails.state_dir), env=environment
    )
    assert (code, out.splitlines()[-1]) == (
        1,
        "audit trail behind the sink: audit.sqlite3: a version 2 store, but the sink holds sequence 4 of "
        f"device kiosk-1's device-keyed trail: {ROLLED_BACK}, or user_id is not this device's ID",
    )
    refused = await restart_refused(trails, stack)
    assert (refused.path, ROLLED_BACK in refused.problem) == (store_path(trails.state_dir), True)


# -- 2: a planted or swapped audit-v2.sqlite3 is never delivered -----------------------------------------

PLANTED = (
    "a version 2 store that no device-keyed store of this device set aside (this device's store records "
    "none): planted, or left from a removed store (anyone with the organization's cipher key can write "
    "one); it is not delivered"
)


async def planted_beside_a_carts_store(trails: Trails, stack: DevStack) -> messages.AuditEvent:
    """A cart that never had a version 2 store: one planted beside its store would post a forged
    PHI access under the cart's own credential at the next start."""
    await four_delivered_two_waiting(trails, stack, PROVIDER)
    forged = forged_phi_access(stack)
    write_version_2_store(legacy_store_path(trails.state_dir), stack.keys.cipher_key, [forged], {})
    return forged


async def test_2_a_planted_version_2_store_is_reported(stack: DevStack, trails: Trails) -> None:
    await planted_beside_a_carts_store(trails, stack)
    environment = stack.agent_environment(PROVIDER)
    code, out, err = await run("verify", "--state-dir", str(trails.state_dir), env=environment)
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        f"version 2 store (audit-v2.sqlite3) broken: {PLANTED}",
        "audit chain ok: 6 records, sequences 1-6 of device dr-lee; the highest sequence the sink "
        "acknowledged is 4",
    ]
    code, out, err = await run("status", "--state-dir", str(trails.state_dir), env=environment)
    assert (code, out) == (1, "")
    assert err.startswith(f"telehealth-agent: audit: {legacy_store_path(trails.state_dir)}: {PLANTED}; ")


async def test_2_a_planted_version_2_store_is_never_delivered(stack: DevStack, trails: Trails) -> None:
    forged = await planted_beside_a_carts_store(trails, stack)
    refused = await restart_refused(trails, stack, PROVIDER)
    assert (refused.path, refused.problem) == (legacy_store_path(trails.state_dir), PLANTED)
    assert refused.advice.startswith("move it out of audit/")
    assert forged.id not in [event_id for event_id, _ in await held_by_sink(stack)]

    # Moved out as the advice says: the cart starts, delivers its own 5 and 6, and the plant never.
    shutil.move(legacy_store_path(trails.state_dir), trails.state_dir.parent / "planted.sqlite3")
    trail = await trails.trail(trails.clinic(user_id=PROVIDER), PROVIDER)
    assert await trail.wait_delivered(WAIT)
    await trail.aclose()
    held = await held_by_sink(stack)
    assert [sequence for _, sequence in held] == [1, 2, 3, 4, 5, 6]
    code, out, _ = await run(
        "verify",
        "--against-sink",
        "--state-dir",
        str(trails.state_dir),
        env=stack.agent_environment(PROVIDER),
    )
    assert code == 0, out


async def swapped_after_a_genuine_upgrade(trails: Trails, stack: DevStack) -> messages.AuditEvent:
    genuine = [kiosk_event(number, stack.organization_id) for number in range(2)]
    write_version_2_store(store_path(trails.state_dir), stack.keys.cipher_key, genuine, {1: ("sink",)})
    trail = trails.unopened(trails.clinic(), legacy_keys=LegacyChainKeys(stack.keys.cipher_key))
    await trail.open()  # the genuine upgrade: record 2 waited, and is delivered
    assert await trail.wait_delivered(WAIT)
    await trail.aclose()
    assert [event_id for event_id, _ in await held_by_sink(stack)] == [genuine[1].id]
    # The genuine records and one more, written with the organization's cipher key in its place.
    forged = kiosk_event(7, stack.organization_id)
    remove_sqlite_file(legacy_store_path(trails.state_dir))
    write_version_2_store(
        legacy_store_path(trails.state_dir),
        stack.keys.cipher_key,
        [*genuine, forged],
        {1: ("sink",), 2: ("sink",)},
    )
    return forged


SWAPPED = (
    "not the version 2 store this agent set aside (that one had 2 records; this one has 3): swapped, "
    "planted or altered (anyone with the organization's cipher key can write one); it is not delivered"
)


async def test_2_the_set_aside_version_2_store_swapped_for_a_forged_one_is_reported(
    stack: DevStack, trails: Trails
) -> None:
    await swapped_after_a_genuine_upgrade(trails, stack)
    code, out, _ = await run("verify", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert (code, out.splitlines()) == (
        1,
        [
            f"version 2 store set aside (audit-v2.sqlite3) broken: {SWAPPED}",
            "audit chain ok: 0 records, the next is sequence 1 of device kiosk-1; nothing acknowledged by "
            "the sink yet",
        ],
    )


async def test_2_the_swapped_version_2_store_is_never_delivered(stack: DevStack, trails: Trails) -> None:
    forged = await swapped_after_a_genuine_upgrade(trails, stack)
    refused = await restart_refused(trails, stack)
    assert (refused.path, refused.problem) == (legacy_store_path(trails.state_dir), SWAPPED)
    assert forged.id not in [event_id for event_id, _ in await held_by_sink(stack)]
