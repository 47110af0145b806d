"""Pruning the audit trail (issue 24, item 7): what the sink acknowledged leaves the file once it is
older than the retention, what it has not stays, the file shrinks, and ``audit verify`` still
detects tampering, truncation and rollback of what remains.

Real parts: the clinic stand-in's audit sink acknowledges (or refuses) each record, the real
``telehealth-agent audit`` command checks the files. The clock is moved on by pruning with a cutoff
in the future (as a retention pass 31 days later would), never by waiting.
"""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from telehealth_client.audit.trail import AuditTrail, ChainKeys, read_status, store_path, verify_chain
from telehealth_client.durable.sqlite import files_bytes
from telehealth_devstack.stack import DevStack
from tests.support.audit import (
    KIOSK,
    PROVIDER,
    WAIT,
    Trails,
    held_by_sink,
    kiosk_event,
    restart_refused,
    run,
)
from tests.support.audit_store import checkpoint, database, record_hash, tamper

pytestmark = pytest.mark.integration

HEAD_MOVED = (
    "does not verify under this device's credential: it was moved back, reset or rewritten by someone "
    "without the key"
)
EDITED = "content does not match its hash (edited, or written without this device's key)"


def past_the_retention() -> datetime:
    """The cutoff of a retention pass 31 days from now with a 30-day retention: everything
    recorded so far is older."""
    return datetime.now(UTC) + timedelta(days=1)


async def record_all(trail: AuditTrail, first: int, count: int, organization_id: str) -> None:
    """``count`` kiosk events recorded at once (one commit for those that arrive together)."""
    await asyncio.gather(
        *(trail.record(kiosk_event(n, organization_id)) for n in range(first, first + count))
    )


async def delivered_then_waiting(trails: Trails, stack: DevStack, delivered: int, waiting: int) -> AuditTrail:
    """``delivered`` events the sink acknowledged, then ``waiting`` more recorded with the sink out
    of reach; the trail that recorded them last, still open, without a sink."""
    online = await trails.trail(trails.clinic())
    await record_all(online, 0, delivered, stack.organization_id)
    assert await online.wait_delivered(WAIT)
    await online.aclose()
    offline = await trails.trail(None)
    await record_all(offline, delivered, waiting, stack.organization_id)
    return offline


def stored_positions(state_dir: Path) -> list[int]:
    db = database(state_dir)
    try:
        return [int(p) for (p,) in db.execute("SELECT position FROM records ORDER BY position")]
    finally:
        db.close()


def checkpointed_size(state_dir: Path) -> int:
    """The store's files once its log is folded in (the agent closed): what it takes at rest."""
    checkpoint(state_dir)
    return files_bytes(store_path(state_dir))


async def test_delivered_records_past_the_retention_go_what_waits_stays_and_is_delivered_later(
    stack: DevStack, trails: Trails
) -> None:
    trail = await delivered_then_waiting(trails, stack, delivered=600, waiting=40)
    await trail.aclose()
    before_pruning = checkpointed_size(trails.state_dir)

    trail = await trails.trail(None)
    young = await trail.prune(datetime.now(UTC) - timedelta(days=30))  # today's pass: nothing is old yet
    assert (young.records, trail.status().pruned) == (0, 0)
    report = await trail.prune(past_the_retention())
    # Every acknowledged record went; none of the 40 the sink never acknowledged, however old.
    assert (report.records, report.unpublished, report.held) == (600, 600, None)
    assert (report.backlog.records, trail.status().awaiting_sink) == (40, 40)
    assert (trail.status().records, trail.status().pruned) == (640, 600)
    assert stored_positions(trails.state_dir) == list(range(601, 641))
    assert read_status(trails.state_dir) == trail.status()  # the counts kept as the file has them
    assert (await trail.verify()).ok
    await trail.aclose()
    after_pruning = checkpointed_size(trails.state_dir)
    assert after_pruning < before_pruning / 4, (before_pruning, after_pruning)

    code, out, err = await run("verify", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert (code, err) == (0, "")
    assert out == (
        f"audit chain ok: 640 records, sequences 1-640 of device {KIOSK} (sequences 1-600 delivered and "
        "pruned: the chain is verified from where they ended); the highest sequence the sink "
        "acknowledged is 600\n"
    )
    code, out, err = await run("status", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert (code, err) == (0, "")
    assert "records: 640, sequences 1-640" in out.splitlines()
    assert "pruned (delivered to the sink, past the retention): sequences 1-600" in out.splitlines()
    assert "waiting for the audit sink: 40" in out.splitlines()

    # The sink reachable again: what waited is delivered, and the sink holds every sequence once.
    trail = await trails.trail(trails.clinic())
    assert await trail.wait_delivered(WAIT)
    held = await held_by_sink(stack)
    assert sorted(sequence for _, sequence in held) == list(range(1, 641))


async def test_the_store_stays_bounded_over_many_retention_periods(stack: DevStack, trails: Trails) -> None:
    """Each round records and delivers as many events as a day of a busy kiosk's audit trail,
    then a retention pass finds all of them past the retention: the file does not grow."""
    trail = await trails.trail(trails.clinic())
    sizes: list[int] = []
    for day in range(6):
        await record_all(trail, day * 200, 200, stack.organization_id)
        assert await trail.wait_delivered(WAIT)
        report = await trail.prune(past_the_retention())
        assert report.records == (199 if day == 0 else 200)  # the chain's last record stays
        sizes.append(report.file_bytes)
    assert trail.status().records - trail.status().pruned == 1
    assert max(sizes[1:]) <= sizes[0] * 1.5 + 64 * 1024, sizes
    assert (await trail.verify()).ok


# -- tampering with what remains after a prune --------------------------------------------------------


@pytest.fixture
async def pruned(stack: DevStack, trails: Trails) -> Path:
    """A kiosk trail of 25 records: 1-20 delivered and pruned, 21-25 waiting (closed)."""
    trail = await delivered_then_waiting(trails, stack, delivered=20, waiting=5)
    report = await trail.prune(past_the_retention())
    assert (report.records, trail.status().pruned) == (20, 20)
    await trail.aclose()
    assert stored_positions(trails.state_dir) == [21, 22, 23, 24, 25]
    return trails.state_dir


def tamperings(state_dir: Path) -> dict[str, tuple[tuple[str, ...], str, str]]:
    """Each tampering (SQL run with the append-only triggers dropped), what ``verify`` says (it
    walks the records first) and what the agent's start says (it checks the head first)."""
    head_moved = f"the chain's head (it says 25 records) {HEAD_MOVED}"
    return {
        "a removed middle record": (
            ("DELETE FROM records WHERE position = 23",),
            "record 23: missing (the chain goes from record 22 to record 24)",
            "record 23: missing (the chain goes from record 22 to record 24)",
        ),
        "the first record kept removed": (
            ("DELETE FROM records WHERE position = 21",),
            "record 21: missing (the chain goes from record 20 to record 22)",
            "record 21: missing (the chain goes from record 20 to record 22)",
        ),
        "an altered anchor": (
            (f"UPDATE pruned SET anchor = '{'0' * 64}'",),
            "record 21: previous record missing or altered",
            head_moved,
        ),
        "the anchor moved on over a removed record": (
            (
                "DELETE FROM records WHERE position = 21",
                f"UPDATE pruned SET through = 21, anchor = '{record_hash(state_dir, 21)}'",
            ),
            head_moved,
            head_moved,
        ),
        "the prune taken back (its anchor removed)": (
            ("DROP TABLE pruned", "PRAGMA user_version = 3"),
            "record 1: missing (the chain starts at record 21)",
            head_moved,
        ),
        "the last records removed and the head moved back": (
            (
                "DELETE FROM records WHERE position > 23",
                f"UPDATE head SET records = 23, hash = '{record_hash(state_dir, 23)}'",
            ),
            f"the chain's head (it says 23 records) {HEAD_MOVED}",
            f"the chain's head (it says 23 records) {HEAD_MOVED}",
        ),
        "every record kept removed": (
            ("DELETE FROM records",),
            "record 21: the last record(s) were removed (5 missing)",
            "its last record does not match the chain's head under this device's key",
        ),
        "an edited record": (
            ("""UPDATE records SET event = replace(event, '"check"', '"other"') WHERE position = 22""",),
            f"record 22: {EDITED}",
            f"record 22: {EDITED}",
        ),
    }


TAMPERINGS = [
    "a removed middle record",
    "the first record kept removed",
    "an altered anchor",
    "the anchor moved on over a removed record",
    "the prune taken back (its anchor removed)",
    "the last records removed and the head moved back",
    "every record kept removed",
    "an edited record",
]


@pytest.mark.parametrize("tampering", TAMPERINGS)
async def test_tampering_with_a_pruned_trail_is_reported_and_refused(
    stack: DevStack, trails: Trails, pruned: Path, tampering: str
) -> None:
    statements, verify_says, start_says = tamperings(pruned)[tampering]
    tamper(pruned, *statements)
    report = verify_chain(pruned, trails.keys, trails.device_id)
    assert (report.ok, report.reason) == (False, verify_says)
    refused = await restart_refused(trails, stack)
    assert refused.problem == start_says
    assert len(await held_by_sink(stack)) == 20  # nothing of the tampered store was delivered


async def test_tampering_after_a_prune_is_named_by_the_command(trails: Trails, pruned: Path) -> None:
    tamper(pruned, f"UPDATE pruned SET anchor = '{'0' * 64}'")
    code, out, err = await run("verify", "--state-dir", str(pruned), env=trails.environment())
    expected = "audit chain broken: record 21: previous record missing or altered\n"
    assert (code, out, err) == (1, expected, "")


async def test_an_older_copy_of_a_pruned_store_put_back_is_a_rollback(
    stack: DevStack, trails: Trails, pruned: Path
) -> None:
    older = pruned.parent / "older"
    shutil.copytree(pruned, older)
    trail = await trails.trail(trails.clinic())  # the 5 waiting reach the sink
    assert await trail.wait_delivered(WAIT)
    assert (await trail.prune(past_the_retention())).records == 4
    await trail.aclose()
    shutil.rmtree(store_path(pruned).parent)
    shutil.copytree(store_path(older).parent, store_path(pruned).parent)

    expected = (
        "the store says the sink acknowledged up to sequence 20, audit-acknowledged.json says 25: an older "
        "copy of the store was put back (records made since are lost)"
    )
    assert verify_chain(pruned, trails.keys, trails.device_id).reason == expected
    assert (await restart_refused(trails, stack)).problem == expected
    code, out, _ = await run("verify", "--state-dir", str(pruned), env=trails.environment())
    assert (code, out) == (1, f"audit chain broken: {expected}\n")


async def test_a_pruned_store_keeps_verifying_after_a_device_credential_rotation(
    stack: DevStack, trails: Trails, pruned: Path
) -> None:
    rotated = ChainKeys("kiosk-rotated-device-credential-0123", [stack.kiosk_credential(KIOSK)])
    trail = AuditTrail(
        pruned, keys=rotated, device_id=KIOSK, organization_id=stack.organization_id, sink=None
    )
    await trail.open()
    await trail.record(kiosk_event(99, stack.organization_id))
    await trail.aclose()
    assert verify_chain(pruned, rotated, KIOSK).ok
    report = verify_chain(pruned, ChainKeys("kiosk-rotated-device-credential-0123"), KIOSK)
    assert (report.ok, report.first_broken) == (False, 21)
    assert report.reason is not None and report.reason.startswith(
        "records 21-25 do not verify under the configured device credentials, the later ones do"
    )


# -- what is never pruned ------------------------------------------------------------------------------


async def test_a_record_the_sink_refused_is_kept_and_holds_the_pruning_there(
    stack: DevStack, trails: Trails
) -> None:
    trail = await trails.trail(trails.clinic())  # the kiosk's credential: a provider's event gets 403
    await record_all(trail, 0, 3, stack.organization_id)
    await trail.record(kiosk_event(3, stack.organization_id, actor_id=PROVIDER, actor_role="provider"))
    await record_all(trail, 4, 3, stack.organization_id)
    assert await trail.wait_delivered(WAIT)
    assert trail.status().refused_sink == 1

    report = await trail.prune(past_the_retention())
    assert (report.records, report.held_at) == (3, 4)
    assert report.held == "the sink refused it (status 403); it is kept, never pruned undelivered"
    assert stored_positions(trails.state_dir) == [4, 5, 6, 7]
    assert (report.backlog.records, trail.status().refused_sink) == (1, 1)
    assert (await trail.verify()).ok


async def test_a_forged_acknowledgement_never_gets_an_undelivered_record_pruned(
    stack: DevStack, trails: Trails
) -> None:
    """Record 2 was refused; the sink's acknowledgement of record 3 puts the kept sequence at 3,
    so the agent's start does not check the delivery marks below it. Turning record 2's refusal
    into an acknowledgement must not get it pruned, and ``verify`` names it."""
    trail = await trails.trail(trails.clinic())
    await trail.record(kiosk_event(0, stack.organization_id))
    await trail.record(kiosk_event(1, stack.organization_id, actor_id=PROVIDER, actor_role="provider"))
    await trail.record(kiosk_event(2, stack.organization_id))
    assert await trail.wait_delivered(WAIT)
    await trail.aclose()
    db = database(trails.state_dir)
    db.execute("UPDATE settled SET refused_status = NULL WHERE position = 2 AND target = 'sink'")
    db.close()

    trail = await trails.trail(None)  # it opens: the marks at or below the sink's head are not checked
    report = await trail.prune(past_the_retention())
    assert (report.records, report.held_at, report.held) == (
        1,
        2,
        "its delivery state (sink) does not verify",
    )
    assert stored_positions(trails.state_dir) == [2, 3]
    await trail.aclose()
    assert verify_chain(trails.state_dir, trails.keys, trails.device_id).reason == (
        "record 2: its delivery state (sink) was altered"
    )


async def test_the_chains_last_record_is_never_pruned(stack: DevStack, trails: Trails) -> None:
    trail = await trails.trail(trails.clinic())
    await record_all(trail, 0, 3, stack.organization_id)
    assert await trail.wait_delivered(WAIT)
    assert (await trail.prune(past_the_retention())).records == 2
    assert (await trail.prune(past_the_retention())).records == 0
    assert stored_positions(trails.state_dir) == [3]
    await trail.record(kiosk_event(3, stack.organization_id))
    await trail.aclose()
    status = read_status(trails.state_dir)
    assert (status.records, status.pruned, status.awaiting_sink) == (4, 2, 1)
    assert verify_chain(trails.state_dir, trails.keys, trails.device_id).ok
