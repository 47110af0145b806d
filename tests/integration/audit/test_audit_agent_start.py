"""An agent whose audit store is damaged refuses to start and says which file and what to do
(the real ``telehealth-agent run`` in a child process; it fails before it needs any network)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from telehealth_client.audit.trail import (
    AuditTrail,
    ChainKeys,
    acknowledgement_path,
    audit_event,
    store_path,
)

from ..cli_process import AGENT, Process

pytestmark = pytest.mark.integration


async def run_agent(state_dir: Path, settings: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``telehealth-agent run`` on ``state_dir``; ``settings`` (a development stack's) replace the
    unreachable defaults."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TELEHEALTH_")}
    env.update(
        TELEHEALTH_USER_ID="kiosk-1",
        TELEHEALTH_STATE_DIR=str(state_dir),
        TELEHEALTH_SUBSCRIBE_KEY="sub-c-start",
        TELEHEALTH_PUBLISH_KEY="pub-c-start",
        TELEHEALTH_CIPHER_KEY="start-cipher-key-0123456789",
        TELEHEALTH_DEVICE_CREDENTIAL="dev-kiosk-start",
        TELEHEALTH_ORIGIN="127.0.0.1:9",  # nothing listens: the start fails before it is needed
        TELEHEALTH_CLINIC_URL="http://127.0.0.1:9",
        TELEHEALTH_SSL="false",
        TELEHEALTH_API_PORT="0",
        TELEHEALTH_API_TOKEN="start-api-token",
    )
    env.update(settings or {})
    proc = await asyncio.create_subprocess_exec(
        *AGENT, "run", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    return await Process(proc).finish()


async def test_a_damaged_audit_store_stops_the_start_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    damaged = store_path(state_dir)
    damaged.parent.mkdir(parents=True, mode=0o700)
    damaged.write_bytes(b"this is not an SQLite database, it was damaged" * 100)
    damaged.chmod(0o600)
    code, out, err = await run_agent(state_dir)
    assert code == 1
    failure = [line for line in (out + err).splitlines() if "start failed" in line]
    assert len(failure) == 1, out + err
    assert (
        f"{damaged}: not a readable audit store (DatabaseError): move it aside to start a new one (it "
        "continues from the sink's head); `telehealth-agent audit verify` tells what is wrong"
    ) in failure[0]
    assert damaged.read_bytes().startswith(b"this is not an SQLite database")  # left as it was


async def test_a_store_keyed_with_another_device_credential_stops_the_start_naming_the_setting(
    tmp_path: Path,
) -> None:
    """Appending under a key that does not verify the chain so far would hide the mistake until
    the next ``audit verify``: the agent says at once which setting is missing."""
    state_dir = tmp_path / "state"
    trail = AuditTrail(
        state_dir,
        keys=ChainKeys("an-earlier-device-credential-0123"),
        device_id="kiosk-1",
        organization_id="org",
        sink=None,
    )
    await trail.open()
    try:
        await trail.record(
            audit_event(
                "DEVICE_CHECK_COMPLETED",
                organization_id="org",
                actor_id="kiosk-1",
                actor_role="patient",
                resource_type="device",
                resource_id="kiosk-1",
                action="check",
            )
        )
    finally:
        await trail.aclose()
    # The acknowledgement file the trail wrote under that credential is refused first (its advice
    # names previous_device_credentials too); the store's own diagnosis is what this is about.
    acknowledgement_path(state_dir).unlink()
    code, out, err = await run_agent(state_dir)
    assert code == 1
    failure = [line for line in (out + err).splitlines() if "start failed" in line]
    assert len(failure) == 1, out + err
    assert (
        f"{store_path(state_dir)}: the chain's head (it says 1 record) does not verify under this device's "
        "credential, and neither do its first record nor its record of the sink's acknowledgements: "
        "device_credential is not the credential that wrote this store (a wrong one, or rotated without "
        "listing the old one in previous_device_credentials), or the whole store was rewritten without it: "
        "after a device credential rotation, list the old credential in previous_device_credentials"
    ) in failure[0]
    assert "an-earlier-device-credential" not in out + err


async def test_a_damaged_outbox_stops_the_start_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    damaged = state_dir / "outbox.sqlite3"
    damaged.parent.mkdir(parents=True, mode=0o700)
    damaged.write_bytes(b"this is not an SQLite database, it was damaged" * 100)
    damaged.chmod(0o600)
    code, out, err = await run_agent(state_dir)
    assert code == 1
    failure = [line for line in (out + err).splitlines() if "start failed" in line]
    assert len(failure) == 1, out + err
    assert (
        f"{damaged}: not an SQLite database (damaged, or another kind of file): move it aside" in failure[0]
    )
