"""``telehealth-agent audit verify | status`` as an operator runs them: a real process on a real store."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from telehealth_client.devstack.stack import DevStack
from telehealth_client.protocol import messages
from telehealth_client.security.audit import AuditTrail, ChainKeys, store_path

from ..cli_process import AGENT, Process
from ..consultation.conftest import PROVIDER
from .conftest import Trails, kiosk_event

pytestmark = pytest.mark.integration

ORG = "org-cli"


SECRET = "audit-cli-cipher-key-0123456789"
KEYED = {"TELEHEALTH_CIPHER_KEY": SECRET}


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``telehealth-agent audit ARGS``; verify gets the cipher key of the settings unless ``env`` is given."""
    if env is None:
        env = KEYED if args[0] == "verify" else {}
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


async def recorded_store(state_dir: Path, count: int, secret: str = SECRET) -> list[messages.AuditEvent]:
    trail = AuditTrail(state_dir, keys=ChainKeys(secret), organization_id=ORG, sink=None)
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


async def test_an_empty_state_directory_is_a_usage_error_not_the_current_directory(tmp_path: Path) -> None:
    for action in ("verify", "status"):
        code, out, err = await run(action, "--state-dir", "")
        assert (code, out) == (2, "")
        assert "argument --state-dir: must not be empty" in err


async def test_the_state_directory_defaults_to_the_settings(tmp_path: Path) -> None:
    await recorded_store(tmp_path, 2)
    code, out, _ = await run("verify", env={**KEYED, "TELEHEALTH_STATE_DIR": str(tmp_path)})
    assert (code, out) == (0, "audit chain ok: 2 records\n")
    code, _, err = await run(
        "verify", env={**KEYED, "TELEHEALTH_STATE_DIR": str(tmp_path), "TELEHEALTH_ROLE": "surgeon"}
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
        f"last record: position 3, recorded at {messages.encode(events[-1])['timestamp']}",
        "waiting for the audit sink: 0",
        "waiting for the audit channel: 3",
        "refused by the audit sink: 1",
        "refused by the audit channel: 0",
    ]
    for event in events:
        assert event.id not in out


def checkpoint(state_dir: Path) -> None:
    db = sqlite3.connect(store_path(state_dir), isolation_level=None)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def truncate_half(state_dir: Path) -> None:
    checkpoint(state_dir)
    path = store_path(state_dir)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def drop_table(name: str) -> Callable[[Path], None]:
    def drop(state_dir: Path) -> None:
        db = sqlite3.connect(store_path(state_dir), isolation_level=None)
        try:
            db.execute(f"DROP TABLE {name}")
        finally:
            db.close()

    drop.__name__ = f"drop_{name}"
    return drop


@pytest.mark.parametrize(
    "damage", [truncate_half, drop_table("head"), drop_table("records")], ids=lambda f: f.__name__
)
async def test_a_damaged_store_is_a_broken_chain_not_a_usage_error(
    tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    """A file that is there but no longer a whole store is a broken trail (exit 1), not a wrong
    path (exit 2)."""
    await recorded_store(tmp_path, 40)
    damage(tmp_path)
    code, out, err = await run("verify", "--state-dir", str(tmp_path))
    assert (code, err) == (1, "")
    assert out.startswith("audit chain broken: ")
    code, out, err = await run("status", "--state-dir", str(tmp_path))
    assert (code, out) == (1, "")
    assert err.startswith(f"telehealth-agent: audit: {store_path(tmp_path)}: not a readable audit store")


# -- the key -------------------------------------------------------------------------------------------


def rewrite_from_record_3(state_dir: Path, link: Callable[[str, int, str], str]) -> None:
    """Edit record 3 (another actor) and recompute every later hash and the head with ``link``:
    all that someone with the file but without the cipher key can do."""
    db = sqlite3.connect(store_path(state_dir), isolation_level=None)
    try:
        db.execute("DROP TRIGGER records_no_update")
        rows = db.execute("SELECT position, event, hash FROM records ORDER BY position").fetchall()
        prev = rows[1][2]
        for position, body, _ in rows[2:]:
            if position == 3:
                data = json.loads(body)
                data["actor"]["userId"] = "dr-someone-else"
                body = json.dumps(data, separators=(",", ":"), sort_keys=True)
            digest = link(prev, position, body)
            db.execute(
                "UPDATE records SET event = ?, prev_hash = ?, hash = ? WHERE position = ?",
                (body, prev, digest, position),
            )
            prev = digest
        db.execute("UPDATE head SET hash = ?", (prev,))
    finally:
        db.close()


def unkeyed(prev_hash: str, position: int, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{position}\n{body}".encode()).hexdigest()


def swap_store(source: Path, path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copy(source, path)


@pytest.mark.parametrize(
    "link", [unkeyed, ChainKeys("a-key-someone-made-up-0123").link], ids=["unkeyed", "another-key"]
)
async def test_an_edit_rehashed_to_the_head_without_the_key_is_reported(
    tmp_path: Path, link: Callable[[str, int, str], str]
) -> None:
    await recorded_store(tmp_path, 6)
    rewrite_from_record_3(tmp_path, link)
    code, out, err = await run("verify", "--state-dir", str(tmp_path))
    assert (code, out, err) == (1, "audit chain broken: record 3: content does not match its hash\n", "")


async def test_a_store_replaced_by_a_fresh_chain_under_another_key_is_reported(tmp_path: Path) -> None:
    await recorded_store(tmp_path / "agent", 6)
    await recorded_store(tmp_path / "elsewhere", 2, secret="a-key-someone-made-up-0123")
    checkpoint(tmp_path / "elsewhere")
    swap_store(store_path(tmp_path / "elsewhere"), store_path(tmp_path / "agent"))
    code, out, err = await run("verify", "--state-dir", str(tmp_path / "agent"))
    assert (code, out, err) == (1, "audit chain broken: record 1: content does not match its hash\n", "")


async def test_verify_after_a_key_rotation_takes_the_previous_keys_of_the_settings(tmp_path: Path) -> None:
    await recorded_store(tmp_path, 2)
    new_key = {"TELEHEALTH_CIPHER_KEY": "the-new-cipher-key-0123456789"}
    code, out, _ = await run("verify", "--state-dir", str(tmp_path), env=new_key)
    assert (code, out) == (1, "audit chain broken: record 1: content does not match its hash\n")
    code, out, _ = await run(
        "verify", "--state-dir", str(tmp_path), env={**new_key, "TELEHEALTH_PREVIOUS_CIPHER_KEYS": SECRET}
    )
    assert (code, out) == (0, "audit chain ok: 2 records\n")


async def test_verify_without_the_cipher_key_is_a_usage_error_naming_the_setting(tmp_path: Path) -> None:
    await recorded_store(tmp_path, 2)
    code, out, err = await run(
        "verify", "--state-dir", str(tmp_path), env={"CREDENTIALS_DIRECTORY": str(tmp_path / "none")}
    )
    assert (code, out) == (2, "")
    assert err == (
        "telehealth-agent: config: cipher_key: not set; looked in TELEHEALTH_CIPHER_KEY, "
        f"TELEHEALTH_CIPHER_KEY_FILE and the systemd credential {tmp_path / 'none' / 'cipher_key'}\n"
    )
