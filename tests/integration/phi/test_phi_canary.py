"""PHI canary, in process: marker strings sent as chat both ways, as an emergency reason and as its
resolution, between a patient endpoint and a provider endpoint on the real stack (relay with its
SQLite persistence, clinic stand-in with its audit sink on disk). The markers must appear in no
log record, no audit event (each agent's store, the sink, ``audit.{org}``), no file of any agent
or of the stack in clear text (checked while the chat waits in the outbox, while the escalation is
open, and after the consultation ended), and nothing the relay holds in memory. After the end the
kiosk's state directory keeps not even the ciphertext of the chat.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from telehealth_client import events
from telehealth_client.durability import OUTBOX_FILE
from telehealth_client.protocol import channels
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.stack import DevStack
from tests.support.audit import sink_events
from tests.support.consultation import (
    CONSULTATION,
    DEPARTMENT,
    PATIENT,
    PROVIDER,
    WAIT,
    Parts,
    RecordingHub,
    added,
    bus_template,
    check_in_and_join,
    sent,
)
from tests.support.phi import (
    Canary,
    CapturedLogs,
    audit_store_events,
    decrypt,
    dumps,
    files_holding,
    files_holding_bytes,
)

pytestmark = pytest.mark.integration


def read_by(reader: str) -> Callable[[object], bool]:
    return lambda e: isinstance(e, events.ChatReadUpdated) and e.reader_id == reader


def wiped(e: object) -> bool:
    return isinstance(e, events.ChatWiped) and e.consultation_id == CONSULTATION


def sealed_rows(outbox_file: Path, consultation_id: str) -> list[bytes]:
    """The sealed blobs the outbox keeps for ``consultation_id`` (read-only, blocking)."""
    with closing(sqlite3.connect(f"file:{outbox_file}?mode=ro", uri=True)) as db:
        rows = db.execute(
            "SELECT sealed FROM pending WHERE consultation_id = ?"
            " UNION ALL SELECT sealed FROM set_aside WHERE consultation_id = ?",
            (consultation_id, consultation_id),
        ).fetchall()
    return [bytes(row[0]) for row in rows]


async def no_leak_in_files(root: Path, canaries: list[Canary]) -> None:
    assert await asyncio.to_thread(files_holding, root, canaries) == []


async def test_marker_phi_stays_out_of_logs_audit_files_and_what_the_relay_stored(
    kept_parts: Parts, kept_stack: DevStack, tmp_path: Path, captured_logs: CapturedLogs
) -> None:
    parts, stack = kept_parts, kept_stack
    asked = Canary.make("I have had chest pain since Tuesday, my reference is {marker}, please call")
    answered = Canary.make("Thank you. Please describe the pain ({marker}) and tell me if it spreads")
    reason = Canary.make("Patient reports crushing chest pain {marker} and shortness of breath")
    resolution = Canary.make("Transferred to cardiology, troponin ordered {marker}")
    canaries = [asked, answered, reason, resolution]

    patient_hub, provider_hub = RecordingHub(), RecordingHub()
    provider_store = await parts.durable("provider-state", PROVIDER)
    kiosk_dir = parts.tmp_path / "kiosk"
    kiosk_store = await parts.durable("kiosk")
    provider = await parts.provider(provider_hub, durable=provider_store)
    await parts.record_consent()
    async with CuttableLink(stack.relay.origin) as link:
        patient = parts.patient(
            patient_hub, state_dir=kiosk_dir / "consultation", durable=kiosk_store, origin=link.origin
        )
        await check_in_and_join(patient, provider, patient_hub, provider_hub)
        patient_chat, provider_chat = patient.chat, provider.chat(CONSULTATION)
        assert patient_chat is not None

        # The kiosk's network drops: its chat waits in the outbox, sealed on disk.
        link.cut()
        question = await patient_chat.send(asked.sentence)
        answer = await provider_chat.send(answered.sentence)
        assert patient_chat.entries[-1].status == "pending"
        kiosk_blobs = await asyncio.to_thread(sealed_rows, kiosk_dir / OUTBOX_FILE, CONSULTATION)
        assert kiosk_blobs, "the kiosk's chat is not in its outbox while the network is down"
        await provider_hub.wait_for(sent(answer.id))  # on the relay before the kiosk is back
        await no_leak_in_files(tmp_path, canaries)

        link.restore()
        await patient_hub.wait_for(sent(question.id))
        await provider_hub.wait_for(added(PATIENT))
        await patient_hub.wait_for(added(PROVIDER))
        assert await patient_chat.mark_read() is not None
        assert await provider_chat.mark_read() is not None
        await provider_hub.wait_for(read_by(PATIENT))
        await patient_hub.wait_for(read_by(PROVIDER))
        # The markers really travelled: each side shows the other's text.
        both = [(answer.id, answered.sentence), (question.id, asked.sentence)]  # timetoken order
        assert [(e.id, e.text) for e in provider_chat.entries] == both
        assert [(e.id, e.text) for e in patient_chat.entries] == both

        desk = provider.emergency
        assert desk is not None
        escalation = await desk.escalate(CONSULTATION, "critical", reason.sentence)
        await provider_hub.wait_for(
            lambda e: (
                isinstance(e, events.EmergencyUpdated)
                and e.escalation_id == escalation.id
                and e.delivered
                and bool(e.notified)  # at least one on-call provider notified
            )
        )
        assert await provider_store.outbox.wait_drained(WAIT)
        # While the escalation is open (sealed on the provider's disk) and the chat is live.
        await no_leak_in_files(tmp_path, canaries)

        await desk.resolve(escalation.id, resolution.sentence)
        assert await provider_store.outbox.wait_drained(WAIT)
        await provider.end(CONSULTATION, follow_up_required=True)
        await patient_hub.wait_for(wiped)
        await provider_hub.wait_for(wiped)
        assert await kiosk_store.trail.wait_delivered(WAIT)
        assert await provider_store.trail.wait_delivered(WAIT)

    # Files: every agent's and the stack's (relay and clinic SQLite, their -wal files), after the end.
    await no_leak_in_files(tmp_path, canaries)
    # The kiosk keeps nothing of the chat, not even its ciphertext.
    outbox_rows = await asyncio.to_thread(sealed_rows, kiosk_dir / OUTBOX_FILE, CONSULTATION)
    assert outbox_rows == []
    middles = [blob[len(blob) // 2 - 16 : len(blob) // 2 + 16] for blob in kiosk_blobs]
    assert await asyncio.to_thread(files_holding_bytes, kiosk_dir, middles) == []

    # The relay: in memory nothing in clear; what it holds for the emergency is the marker, encrypted.
    held = stack.relay.dump_text()
    assert [c.marker for c in canaries if c.in_text(held)] == []
    emergency = [
        decrypt(stack, m.payload) for m in stack.relay.stored_messages(channels.emergency(DEPARTMENT))
    ]
    assert reason.in_text(dumps(emergency)) and resolution.in_text(dumps(emergency))

    # Audit: each agent's store, the sink (read as the auditor), audit.{org} (read as an admin).
    for state_dir in (kiosk_dir, parts.tmp_path / "provider-state"):
        stored = await asyncio.to_thread(audit_store_events, state_dir)
        assert stored and [line for line in stored if any(c.in_text(line) for c in canaries)] == []
    at_sink = await sink_events(stack)
    assert {"PHI_MESSAGE_SENT", "PHI_MESSAGE_READ", "EMERGENCY_ESCALATION_TRIGGERED"} <= {
        e["eventType"] for e in at_sink
    }
    assert [c.marker for c in canaries if c.in_text(dumps(at_sink))] == []
    audit_channel = channels.audit(stack.organization_id)
    published = len(stack.relay.stored_messages(audit_channel))
    reader = PubNubBus(replace(bus_template(stack, "audit-reader"), secret_key=stack.keys.secret_key))
    try:
        on_channel = await reader.history(audit_channel, limit=100)
    finally:
        await reader.aclose()
    assert len(on_channel) >= published > 0  # every one read (a late one may have joined them)
    assert [c.marker for c in canaries if c.in_text(dumps([e.message for e in on_channel]))] == []

    # Logs: every record of the run at DEBUG, with its extra fields and exception text.
    assert any("emergency escalated" in line for line in captured_logs.lines)
    assert captured_logs.holding(canaries) == []
