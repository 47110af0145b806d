"""Audit events survive SIGKILL at random points and reach the sink exactly once.

A child process (``audit_child.py``, the real trail and clinic client) records events and prints
each position once record() returned. The test kills it with SIGKILL after a random number of
those lines (never after a random sleep) while more events are queued on its stdin, so the kill
lands in the middle of recording or delivering; then starts it again on the same state directory.
At the end a run drains: every event any run reported is in the chain at the position reported
and at the sink exactly once, the sink holds nothing else, and the chain verifies.
"""

from __future__ import annotations

import random
import sqlite3
import sys
from pathlib import Path

import pytest

from telehealth_client.audit.trail import ChainKeys, read_status, store_path, verify_chain
from telehealth_devstack.stack import DevStack
from tests.support.audit import sink_events
from tests.support.cli import Process, unset_environment

pytestmark = pytest.mark.integration

CHILD = Path(__file__).with_name("audit_child.py")
SEED = 20261122
KILLS = 21


def child_environment(stack: DevStack) -> dict[str, str]:
    return {**unset_environment(), **stack.agent_environment()}


async def start(state_dir: Path, run: int, env: dict[str, str]) -> Process:
    return await Process.spawn(sys.executable, CHILD, str(state_dir), str(run), env=env, stdin=True)


def reported(lines: list[str]) -> dict[int, str]:
    """``recorded POSITION ID`` lines: what the child said was on disk."""
    found: dict[int, str] = {}
    for line in lines:
        if line.startswith("recorded "):
            _, position, event_id = line.split()
            found[int(position)] = event_id
    return found


def stored_ids(state_dir: Path) -> dict[int, str]:
    db = sqlite3.connect(f"{store_path(state_dir).as_uri()}?mode=ro", uri=True)
    try:
        return {
            int(position): str(event_id)
            for position, event_id in db.execute("SELECT position, id FROM records")
        }
    finally:
        db.close()


def merge(into: dict[int, str], found: dict[int, str]) -> None:
    for position, event_id in found.items():
        assert into.setdefault(position, event_id) == event_id, f"record {position} reported twice"


async def test_events_survive_sigkill_at_random_points_and_reach_the_sink_exactly_once(
    stack: DevStack, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    env = child_environment(stack)
    state_dir = tmp_path / "state"
    said: dict[int, str] = {}

    for run in range(KILLS):
        child = await start(state_dir, run, env)
        try:
            await child.next_line("open")
            queued = rng.randint(1, 8)
            await child.write(b"go\n" * queued)
            for _ in range(rng.randint(0, queued)):
                await child.next_line("recorded ")
        finally:
            await child.kill()  # SIGKILL; then every line it wrote is in child.lines
        merge(said, reported(child.lines))

    last = await start(state_dir, KILLS, env)
    await last.next_line("open")
    await last.write(b"go\ngo\n")
    code, out, err = await last.finish(within=40.0)  # its stdin closed: it drains and exits
    assert (code, out.splitlines()[-1]) == (0, "drained"), err
    merge(said, reported(out.splitlines()))

    chain = stored_ids(state_dir)
    assert len(said) >= KILLS  # the loop did record something in most runs
    for position, event_id in said.items():
        assert chain[position] == event_id
    at_sink = [event["id"] for event in await sink_events(stack)]
    assert len(at_sink) == len(set(at_sink))  # each once
    assert sorted(at_sink) == sorted(chain.values())  # every record, nothing else
    kiosk = env["TELEHEALTH_USER_ID"]
    report = verify_chain(state_dir, ChainKeys(env["TELEHEALTH_DEVICE_CREDENTIAL"]), kiosk)
    assert (report.ok, report.records) == (True, len(chain))
    assert read_status(state_dir).awaiting_sink == 0
