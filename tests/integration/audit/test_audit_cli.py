"""``telehealth-agent audit verify | status`` as an operator runs them: a real process on a real store.

The tamperings are those of someone with write access to the agent's state directory but not the
device credential (it comes from the settings, outside the state directory) nor the sink: (a) the
last records deleted and the head moved back, (b) every record deleted and the head reset to an
empty chain, (c) an older copy of the store put back, (d) another agent's store swapped in, (e) a
record edited and the chain recomputed with the organization's cipher key. Each exits 1 and names
what it found.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from telehealth_client.audit.trail import (
    AuditTrail,
    ChainKeys,
    LegacyChainKeys,
    legacy_store_path,
    store_path,
)
from telehealth_client.protocol import messages
from telehealth_devstack.stack import DevStack
from tests.support.audit import CREDENTIAL, DEVICE, KEYED, Trails, kiosk_event, run
from tests.support.audit_store import checkpoint, database, record_hash, tamper
from tests.support.audit_v2_store import write_version_2_store
from tests.support.consultation import KIOSK, PROVIDER

pytestmark = pytest.mark.integration

ORG = "org-cli"
CIPHER_KEY = "audit-cli-organization-cipher-key"
EDITED = "content does not match its hash (edited, or written without this device's key)"
HEAD_MOVED = (
    "does not verify under this device's credential: it was moved back, reset or rewritten by someone "
    "without the key"
)


async def recorded_store(
    state_dir: Path,
    count: int,
    credential: str = CREDENTIAL,
    device_id: str = DEVICE,
    previous: tuple[str, ...] = (),
) -> list[messages.AuditEvent]:
    trail = AuditTrail(
        state_dir,
        keys=ChainKeys(credential, previous),
        device_id=device_id,
        organization_id=ORG,
        sink=None,
        legacy_keys=LegacyChainKeys(CIPHER_KEY),
    )
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


def assert_no_event_content(output: str, events: list[messages.AuditEvent]) -> None:
    for event in events:
        assert event.id not in output
        assert str(event.metadata["sessionId"]) not in output


def replace_store(source_dir: Path, state_dir: Path) -> None:
    """Put ``source_dir``'s audit store (its files, as they are) in place of ``state_dir``'s."""
    shutil.rmtree(store_path(state_dir).parent)
    shutil.copytree(store_path(source_dir).parent, store_path(state_dir).parent)


# -- an intact trail -----------------------------------------------------------------------------------


async def test_verify_says_ok_with_the_count_device_and_sequences(tmp_path: Path) -> None:
    events = await recorded_store(tmp_path, 4)
    code, out, err = await run("verify", "--state-dir", str(tmp_path))
    assert (code, err) == (0, "")
    assert out == (
        "audit chain ok: 4 records, sequences 1-4 of device kiosk-1; nothing acknowledged by the sink yet\n"
    )
    assert_no_event_content(out, events)


async def test_verify_names_the_edited_record_and_exits_1(tmp_path: Path) -> None:
    events = await recorded_store(tmp_path, 4)
    tamper(tmp_path, """UPDATE records SET event = replace(event, '"check"', '"other"') WHERE position = 2""")
    code, out, err = await run("verify", "--state-dir", str(tmp_path))
    assert (code, out, err) == (1, f"audit chain broken: record 2: {EDITED}\n", "")
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


# -- (a), (b): the head moved back or reset -------------------------------------------------------------


async def test_a_last_records_deleted_and_the_head_moved_back(tmp_path: Path) -> None:
    await recorded_store(tmp_path, 6)
    tamper(
        tmp_path,
        "DELETE FROM records WHERE position > 4",
        f"UPDATE head SET records = 4, hash = '{record_hash(tmp_path, 4)}'",
    )
    code, out, err = await run("verify", "--state-dir", str(tmp_path))
    assert (code, out, err) == (
        1,
        f"audit chain broken: the chain's head (it says 4 records) {HEAD_MOVED}\n",
        "",
    )


async def test_b_every_record_deleted_and_the_head_reset_to_an_empty_chain(tmp_path: Path) -> None:
    await recorded_store(tmp_path / "fresh", 0)
    db = database(tmp_path / "fresh")
    genesis = db.execute("SELECT hash FROM head").fetchone()[0]
    db.close()
    await recorded_store(tmp_path / "agent", 5)
    tamper(tmp_path / "agent", "DELETE FROM records", f"UPDATE head SET records = 0, hash = '{genesis}'")
    code, out, err = await run("verify", "--state-dir", str(tmp_path / "agent"))
    assert (code, out, err) == (
        1,
        f"audit chain broken: the chain's head (it says 0 records) {HEAD_MOVED}\n",
        "",
    )


async def test_status_on_a_trail_whose_undelivered_events_were_erased_says_so(tmp_path: Path) -> None:
    """Erasing what never reached the sink and moving the head back used to leave ``status``
    saying that nothing waits; it now says the trail failed its check and exits 1."""
    await recorded_store(tmp_path, 5)
    trail = AuditTrail(tmp_path, keys=ChainKeys(CREDENTIAL), device_id=DEVICE, organization_id=ORG, sink=None)
    await trail.open()
    for position in (1, 2, 3):
        await trail._db.acknowledge("sink", position, position)
    await trail.aclose()
    tamper(
        tmp_path,
        "DELETE FROM records WHERE position > 3",
        f"UPDATE head SET records = 3, hash = '{record_hash(tmp_path, 3)}'",
    )
    code, out, err = await run("status", "--state-dir", str(tmp_path))
    assert (code, out) == (1, "")
    assert err == (
        f"telehealth-agent: audit: {store_path(tmp_path)}: the chain's head (it says 3 records) "
        f"{HEAD_MOVED}; what waits for delivery cannot be told from it (`telehealth-agent audit verify` "
        "names the problem)\n"
    )

    # Forged "delivered" marks on what waits are no better: status says so too.
    await recorded_store(tmp_path / "forged", 3)
    db = database(tmp_path / "forged")
    db.execute("INSERT INTO settled (position, target, refused_status, mac) VALUES (2, 'sink', NULL, 'x')")
    db.execute("INSERT INTO settled (position, target, refused_status, mac) VALUES (3, 'sink', NULL, 'x')")
    db.close()
    code, out, err = await run("status", "--state-dir", str(tmp_path / "forged"))
    assert (code, out) == (1, "")
    assert "record 2: its delivery state (sink) was altered" in err


# -- (c): an older copy put back (the sink's acknowledgements, kept, tell) ------------------------------


async def test_c_an_older_copy_of_the_store_put_back(stack: DevStack, trails: Trails) -> None:
    trail = await trails.trail(trails.clinic())
    for number in range(3):
        await trail.record(kiosk_event(number, stack.organization_id))
    assert await trail.wait_delivered(15.0)
    await trail.aclose()
    older = trails.state_dir.parent / "older"
    shutil.copytree(trails.state_dir, older)

    trail = await trails.trail(trails.clinic())
    for number in range(3, 5):
        await trail.record(kiosk_event(number, stack.organization_id))
    assert await trail.wait_delivered(15.0)
    await trail.aclose()
    replace_store(older, trails.state_dir)

    code, out, err = await run("verify", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert (code, err) == (1, "")
    assert out == (
        "audit chain broken: the trail ends at sequence 3 but the sink already acknowledged sequence 5: "
        "its last records were removed, or an older copy of the store was put back\n"
    )


# -- (d): another agent's store ---------------------------------------------------------------------------


async def test_d_another_agents_store_swapped_in(tmp_path: Path) -> None:
    await recorded_store(tmp_path / "agent", 6)
    await recorded_store(tmp_path / "other", 9, "kiosk-2-device-credential-0123", "kiosk-2")
    replace_store(tmp_path / "other", tmp_path / "agent")
    code, out, err = await run("verify", "--state-dir", str(tmp_path / "agent"))
    assert (code, out, err) == (
        1,
        "audit chain broken: the store is device kiosk-2's, not this device's (kiosk-1): either another "
        "device's store was put here, or user_id is not this device's ID\n",
        "",
    )


# -- (e): a chain recomputed with the organization's key ------------------------------------------------


def rewrite_from_record_3(state_dir: Path, link: Callable[[str, int, str], str]) -> None:
    """Edit record 3 (another actor) and recompute every later hash and the head with ``link``."""
    db = database(state_dir)
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
        organization = ChainKeys(CIPHER_KEY)
        db.execute("UPDATE head SET hash = ?, mac = ?", (prev, organization.head(DEVICE, 0, len(rows), prev)))
    finally:
        db.close()


def unkeyed(prev_hash: str, position: int, body: str) -> str:
    return hashlib.sha256(f"{prev_hash}\n{position}\n{body}".encode()).hexdigest()


@pytest.mark.parametrize(
    "link",
    [ChainKeys(CIPHER_KEY).link, LegacyChainKeys(CIPHER_KEY).link, unkeyed],
    ids=["organization-key", "organization-key-version-2", "unkeyed"],
)
async def test_e_a_record_edited_and_the_chain_recomputed_with_the_organizations_key(
    tmp_path: Path, link: Callable[[str, int, str], str]
) -> None:
    await recorded_store(tmp_path, 6)
    rewrite_from_record_3(tmp_path, link)
    code, out, err = await run(
        "verify", "--state-dir", str(tmp_path), env={**KEYED, "TELEHEALTH_CIPHER_KEY": CIPHER_KEY}
    )
    assert (code, out, err) == (1, f"audit chain broken: record 3: {EDITED}\n", "")


# -- keys and settings ----------------------------------------------------------------------------------


async def test_a_rotated_device_credential_keeps_verifying_the_old_chain(tmp_path: Path) -> None:
    await recorded_store(tmp_path, 2)
    await recorded_store(tmp_path, 2, credential="audit-cli-new-device-credential", previous=(CREDENTIAL,))
    rotated = {**KEYED, "TELEHEALTH_DEVICE_CREDENTIAL": "audit-cli-new-device-credential"}
    code, out, _ = await run("verify", "--state-dir", str(tmp_path), env=rotated)
    # Not "record 1 edited": the first records fail, the later ones verify, so the setting is named.
    assert (code, out) == (
        1,
        "audit chain broken: records 1-2 do not verify under the configured device credentials, the later "
        "ones do: written under a device credential that is not configured (device_credential is wrong, "
        "or it was rotated: list the old one in previous_device_credentials), or edited\n",
    )
    code, out, _ = await run(
        "verify",
        "--state-dir",
        str(tmp_path),
        env={**rotated, "TELEHEALTH_PREVIOUS_DEVICE_CREDENTIALS": CREDENTIAL},
    )
    assert (code, out) == (
        0,
        "audit chain ok: 4 records, sequences 1-4 of device kiosk-1; nothing acknowledged by the sink yet\n",
    )


async def test_a_wrong_device_credential_is_named_as_such_not_as_an_edited_record(tmp_path: Path) -> None:
    """Nothing in the store verifies (its head, its first record, its kept acknowledgement): the
    setting is the first thing to check, and the message says so."""
    await recorded_store(tmp_path, 3)
    wrong = {**KEYED, "TELEHEALTH_DEVICE_CREDENTIAL": "audit-cli-some-other-credential"}
    code, out, _ = await run("verify", "--state-dir", str(tmp_path), env=wrong)
    assert (code, out) == (
        1,
        "audit chain broken: the chain's head (it says 3 records) does not verify under this device's "
        "credential, and neither do its first record nor its record of the sink's acknowledgements: "
        "device_credential is not the credential that wrote this store (a wrong one, or rotated without "
        "listing the old one in previous_device_credentials), or the whole store was rewritten without it\n",
    )
    code, _, err = await run("status", "--state-dir", str(tmp_path), env=wrong)
    assert code == 1 and "device_credential is not the credential that wrote this store" in err
    assert "audit-cli-some-other-credential" not in out + err


async def test_verify_without_a_device_credential_or_cipher_key_is_a_usage_error_naming_it(
    tmp_path: Path,
) -> None:
    await recorded_store(tmp_path, 2)
    code, out, err = await run(
        "verify",
        "--state-dir",
        str(tmp_path),
        env={"TELEHEALTH_USER_ID": DEVICE, "CREDENTIALS_DIRECTORY": str(tmp_path / "none")},
    )
    assert (code, out) == (2, "")
    assert err == (
        "telehealth-agent: config: device_credential: not set; looked in TELEHEALTH_DEVICE_CREDENTIAL, "
        "TELEHEALTH_DEVICE_CREDENTIAL_FILE and the systemd credential "
        f"{tmp_path / 'none' / 'device_credential'}\n"
    )


async def test_another_device_id_in_the_settings_is_not_this_trails_device(tmp_path: Path) -> None:
    """A user_id typo is not called tampering only: the message names the setting too."""
    await recorded_store(tmp_path, 2)
    code, out, _ = await run(
        "verify", "--state-dir", str(tmp_path), env={**KEYED, "TELEHEALTH_USER_ID": "kiosk-9"}
    )
    assert (code, out) == (
        1,
        "audit chain broken: the store is device kiosk-1's, not this device's (kiosk-9): either another "
        "device's store was put here, or user_id is not this device's ID\n",
    )


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
    assert (code, out.split(";")[0]) == (0, "audit chain ok: 2 records, sequences 1-2 of device kiosk-1")
    code, _, err = await run(
        "verify", env={**KEYED, "TELEHEALTH_STATE_DIR": str(tmp_path), "TELEHEALTH_ROLE": "surgeon"}
    )
    assert code == 2 and err.startswith("telehealth-agent: config: role")


# -- status -------------------------------------------------------------------------------------------------


async def test_status_counts_what_waits_what_was_refused_and_what_the_sink_acknowledged(
    stack: DevStack, trails: Trails
) -> None:
    trail = await trails.trail(trails.clinic())  # the kiosk's credential: a provider's event gets 403
    refused = kiosk_event(0, stack.organization_id, actor_id=PROVIDER, actor_role="provider")
    events = [refused, *(kiosk_event(number, stack.organization_id) for number in range(1, 3))]
    for event in events:
        await trail.record(event)
    assert await trail.wait_delivered(15.0)
    await trail.aclose()
    code, out, err = await run("status", "--state-dir", str(trails.state_dir), env=trails.environment())
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"device: {KIOSK}",
        "records: 3, sequences 1-3",
        f"last record: position 3, recorded at {messages.encode(events[-1])['timestamp']}",
        "waiting for the audit sink: 0",
        "waiting for the audit channel: 3",
        "refused by the audit sink: 1",
        "refused by the audit channel: 0",
        # Sequence 1 was refused (the sink holds 2 and 3 above a gap): the highest it stored counts.
        "highest sequence acknowledged by the sink: 3",
    ]
    for event in events:
        assert event.id not in out


def truncate_half(state_dir: Path) -> None:
    checkpoint(state_dir)
    path = store_path(state_dir)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def drop_table(name: str) -> Callable[[Path], None]:
    def drop(state_dir: Path) -> None:
        db = database(state_dir)
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


# -- a version 2 store ---------------------------------------------------------------------------------------


async def test_a_version_2_store_before_and_after_the_upgrade(tmp_path: Path) -> None:
    events = [kiosk_event(number, ORG, metadata={"sessionId": f"session-{number}"}) for number in range(3)]
    write_version_2_store(store_path(tmp_path), CIPHER_KEY, events, {1: ("sink", "channel")})
    keyed = {**KEYED, "TELEHEALTH_CIPHER_KEY": CIPHER_KEY}
    code, out, _ = await run("verify", "--state-dir", str(tmp_path), env=keyed)
    assert (code, out) == (
        0,
        "audit chain ok: 3 records (a version 2 store, keyed by the organization's cipher key; the agent "
        "sets it aside and begins a device-keyed one at its next start)\n",
    )

    await recorded_store(tmp_path, 1)  # what the upgraded agent does at start, then one event
    assert legacy_store_path(tmp_path).exists()
    code, out, _ = await run("verify", "--state-dir", str(tmp_path), env=keyed)
    assert (code, out.splitlines()) == (
        0,
        [
            "version 2 store set aside (audit-v2.sqlite3) ok: 3 records",
            "audit chain ok: 1 record, sequence 1 of device kiosk-1; nothing acknowledged by the sink yet",
        ],
    )
    code, out, _ = await run("status", "--state-dir", str(tmp_path), env=keyed)
    assert code == 0
    assert out.splitlines()[-5:] == [
        "version 2 store set aside (audit-v2.sqlite3): records: 3",
        "version 2 store set aside (audit-v2.sqlite3): waiting for the audit sink: 2",
        "version 2 store set aside (audit-v2.sqlite3): waiting for the audit channel: 2",
        "version 2 store set aside (audit-v2.sqlite3): refused by the audit sink: 0",
        "version 2 store set aside (audit-v2.sqlite3): refused by the audit channel: 0",
    ]
    code, _, err = await run("verify", "--state-dir", str(tmp_path))  # no cipher key
    assert (code, err) == (
        2,
        f"telehealth-agent: config: cipher_key: not set; {legacy_store_path(tmp_path)} is a version 2 store, "
        "keyed by the cipher key\n",
    )
