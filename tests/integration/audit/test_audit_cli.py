"""``telehealth-agent audit verify | status`` as an operator runs them: a real process on a real store."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from telehealth_client.devstack.stack import DevStack
from telehealth_client.protocol import messages
from telehealth_client.security.audit import AuditTrail, store_path

from ..cli_process import AGENT, Process
from ..consultation.conftest import PROVIDER
from .conftest import Trails, kiosk_event

pytestmark = pytest.mark.integration

ORG = "org-cli"


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith("TELEHEALTH_")}
    proc = await asyncio.create_subprocess_exec(
        *AGENT,
        "audit",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**base, **(env or {})},
    )
    return await Process(proc).finish()


async def recorded_store(state_dir: Path, count: int) -> list[messages.AuditEvent]:
    trail = AuditTrail(state_dir, organization_id=ORG, sink=None)
    await trail.open()
    events = [
        kiosk_event(number, ORG, metadata={"sessionId": f"session-{number}"}) for number in range(count)
    ]
    try:
        for event in events:
            await trail.record(event)
    finally:
        await trail.aclose()
    return events


def tamper(state_dir: Path, statement: str) -> None:
    db = sqlite3.connect(store_path(state_dir), isolation_level=None)
    try:
        db.execute("DROP TRIGGER records_no_update")
        db.execute("DROP TRIGGER records_no_delete")
        db.execute(statement)
    finally:
        db.close()


def assert_no_event_content(output: str, events: list[messages.AuditEvent]) -> None:
    for event in events:
        assert event.id not in output
        assert str(event.metadata["sessionId"]) not in output


async def test_verify_says_ok_with_the_count(tmp_path: Path) -> None:
    events = await recorded_store(tmp_path, 4)
    code, out, err = await run("verify", "--state-dir", str(tmp_path))
    assert (code, out, err) == (0, "audit chain ok: 4 records\n", "")
    assert_no_event_content(out, events)


async def test_verify_names_the_edited_record_and_exits_1(tmp_path: Path) -> None:
    events = await recorded_store(tmp_path, 4)
    tamper(tmp_path, """UPDATE records SET event = replace(event, '"check"', '"other"') WHERE position = 2""")
    code, out, err = await run("verify", "--state-dir", str(tmp_path))
    assert (code, out, err) == (1, "audit chain broken: record 2: content does not match its hash\n", "")
    assert_no_event_content(out, events)


async def test_verify_names_a_deleted_middle_and_a_deleted_last_record(tmp_path: Path) -> None:
    await recorded_store(tmp_path / "middle", 4)
    tamper(tmp_path / "middle", "DELETE FROM records WHERE position = 3")
    code, out, _ = await run("verify", "--state-dir", str(tmp_path / "middle"))
    assert (code, out) == (
        1,
        "audit chain broken: record 3: missing (the chain goes from record 2 to record 4)\n",
    )

    await recorded_store(tmp_path / "last", 4)
    tamper(tmp_path / "last", "DELETE FROM records WHERE position = 4")
    code, out, _ = await run("verify", "--state-dir", str(tmp_path / "last"))
    assert (code, out) == (1, "audit chain broken: record 4: the last record(s) were removed (1 missing)\n")


async def test_a_missing_store_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    for action in ("verify", "status"):
        code, out, err = await run(action, "--state-dir", str(tmp_path))
        assert (code, out) == (2, "")
        assert err == f"telehealth-agent: audit: {store_path(tmp_path)}: no audit store there\n"
    assert await asyncio.to_thread(os.listdir, tmp_path) == []  # reading created nothing


async def test_the_state_directory_defaults_to_the_settings(tmp_path: Path) -> None:
    await recorded_store(tmp_path, 2)
    code, out, _ = await run("verify", env={"TELEHEALTH_STATE_DIR": str(tmp_path)})
    assert (code, out) == (0, "audit chain ok: 2 records\n")
    code, _, err = await run(
        "verify", env={"TELEHEALTH_STATE_DIR": str(tmp_path), "TELEHEALTH_ROLE": "surgeon"}
    )
    assert code == 2 and err.startswith("telehealth-agent: config: role")


async def test_status_counts_what_waits_and_what_was_refused(stack: DevStack, trails: Trails) -> None:
    trail = await trails.trail(trails.clinic())  # the kiosk's credential: a provider's event gets 403
    refused = kiosk_event(0, stack.organization_id, actor_id=PROVIDER, actor_role="provider")
    events = [refused, *(kiosk_event(number, stack.organization_id) for number in range(1, 3))]
    for event in events:
        await trail.record(event)
    assert await trail.wait_delivered(15.0)
    await trail.aclose()
    code, out, err = await run("status", "--state-dir", str(trails.state_dir))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "records: 3",
        "waiting for the audit sink: 0",
        "waiting for the audit channel: 3",
        "refused by the audit sink: 1",
        "refused by the audit channel: 0",
    ]
    for event in events:
        assert event.id not in out
