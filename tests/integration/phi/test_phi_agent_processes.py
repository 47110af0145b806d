"""PHI canary through real agent processes: a patient kiosk agent and a provider cart agent
(``tests/support/agent_harness.py --debug``, each a real ``Agent`` with its settings from
``TELEHEALTH_*``) chat both ways with read receipts, the provider escalates an emergency and
resolves it, and ends the consultation. Nothing either process wrote (stdout, and stderr with
every log record at DEBUG), no file of either state directory or of the stack, nothing the relay
holds and nothing at the audit sink carries a marker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from telehealth_devstack.stack import DevStack
from tests.support.agent_child import AgentChildren
from tests.support.audit import sink_events
from tests.support.consultation import (
    AGENT_CHECK_IN,
    CONSULTATION,
    KIOSK,
    PATIENT,
    PROVIDER,
    Parts,
    patient_agent_environment,
    provider_agent_environment,
)
from tests.support.phi import Canary, audit_store_events, dumps, files_holding

pytestmark = pytest.mark.integration


async def test_marker_phi_stays_out_of_what_agent_processes_write_and_keep(
    kept_parts: Parts, kept_stack: DevStack, tmp_path: Path, agent_children: AgentChildren
) -> None:
    stack = kept_stack
    asked = Canary.make("My daughter's name is on file, the code she gave me is {marker}")
    answered = Canary.make("I see a rash in your chart note {marker}, when did it start?")
    reason = Canary.make("Anaphylaxis suspected after penicillin {marker}, airway swelling")
    resolution = Canary.make("Epinephrine given, stable, note {marker}")
    canaries = [asked, answered, reason, resolution]
    agents_dir = tmp_path / "processes"
    provider_dir, kiosk_dir = agents_dir / PROVIDER, agents_dir / KIOSK
    common = {"TELEHEALTH_RECONNECT_MAX_SECONDS": "1"}

    provider = await agent_children.start(
        provider_agent_environment(stack, provider_dir, **common), logs=asyncio.subprocess.PIPE, debug=True
    )
    await kept_parts.record_consent()
    kiosk = await agent_children.start(
        patient_agent_environment(stack, kiosk_dir, **common), logs=asyncio.subprocess.PIPE, debug=True
    )

    await kiosk.command_ok("check-in", **AGENT_CHECK_IN)
    await provider.wait_event("state-changed", consultation_id=CONSULTATION, state="checked-in")
    await provider.command_ok("join", consultationId=CONSULTATION)
    await kiosk.wait_event("state-changed", consultation_id=CONSULTATION, state="connecting")

    await kiosk.command_ok("chat", text=asked.sentence)
    await provider.wait_event("chat-message", sender_id=PATIENT)
    await provider.command_ok("chat", consultationId=CONSULTATION, text=answered.sentence)
    await kiosk.wait_event("chat-message", sender_id=PROVIDER)
    await kiosk.command_ok("read")
    await provider.command_ok("read", consultationId=CONSULTATION)
    await provider.wait_event("chat-read", reader_id=PATIENT)
    await kiosk.wait_event("chat-read", reader_id=PROVIDER)

    escalation = await provider.command_ok(
        "escalate", consultationId=CONSULTATION, severity="life-threatening", reason=reason.sentence
    )
    await provider.wait_event("emergency", escalation_id=escalation["id"], delivered=True)
    # During the consultation: the open escalation is kept (sealed) in the provider's state.
    assert await asyncio.to_thread(files_holding, tmp_path, canaries) == []
    await provider.command_ok("resolve", id=escalation["id"], resolution=resolution.sentence)
    await provider.wait_event("emergency", escalation_id=escalation["id"], status="resolved")
    assert (await provider.command_ok("drained"))["outbox"]
    await provider.command_ok("end", consultationId=CONSULTATION, followUpRequired=True)
    await kiosk.wait_event("chat-wiped", consultation_id=CONSULTATION)
    await provider.wait_event("chat-wiped", consultation_id=CONSULTATION)
    for child in (kiosk, provider):
        drained = await child.command_ok("drained")
        assert drained["outbox"] and drained["audit"], drained
        await child.stop()

    # Everything each process wrote: its JSON lines and every log record at DEBUG.
    for child in (kiosk, provider):
        written = child.written()
        assert b"level=debug" in written and b"emergency" in b"".join(provider.stderr)
        assert [c.marker for c in canaries if c.in_bytes(written)] == []
    # Every file either agent or the stack kept, and what the relay and the sink hold.
    assert await asyncio.to_thread(files_holding, tmp_path, canaries) == []
    assert [c.marker for c in canaries if c.in_text(stack.relay.dump_text())] == []
    at_sink = await sink_events(stack)
    assert "EMERGENCY_ESCALATION_TRIGGERED" in {e["eventType"] for e in at_sink}
    assert [c.marker for c in canaries if c.in_text(dumps(at_sink))] == []
    for state_dir in (kiosk_dir, provider_dir):
        stored = await asyncio.to_thread(audit_store_events, state_dir)
        assert stored and [c.marker for c in canaries if c.in_text("\n".join(stored))] == []
