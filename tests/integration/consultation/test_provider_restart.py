"""Restart of the provider side: the provider agent, a real process, is SIGKILLed while its
consultation is connecting and again while in progress; started again on the same state directory
it resumes its own consultation (fresh standing token, same subscriptions, catch-up from the saved
timetoken) and applies what the patient published meanwhile once, in order."""

from __future__ import annotations

from pathlib import Path

import pytest

from telehealth_client import events
from telehealth_client.agent import CONSULTATION_STATE_DIR
from telehealth_client.consultation import state_file
from telehealth_client.consultation.patient import DeviceReport
from telehealth_client.consultation.provider import CONSULTATIONS_DIR
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.protocol.messages import Summary
from tests.support.agent_child import AgentChild, Launch
from tests.support.consultation import (
    CHECK_IN,
    CONSULTATION,
    Parts,
    RecordingHub,
)

pytestmark = pytest.mark.integration


def device_verdicts(agent: AgentChild) -> list[tuple[str, str, str, str]]:
    return [(e["camera"], e["microphone"], e["speaker"], e["network"]) for e in agent.events("device-status")]


async def test_a_killed_provider_agent_resumes_its_consultation_and_applies_what_it_missed_once(
    parts: Parts, launch: Launch, tmp_path: Path
) -> None:
    patient_hub = RecordingHub()
    await parts.record_consent()
    first: AgentChild = await launch(provider=True)
    patient = parts.patient(patient_hub)
    await patient.check_in(**CHECK_IN)
    await first.wait_state(S.CHECKED_IN)
    assert (await first.command("queue-updates"))["ok"]
    await patient_hub.wait_state(S.WAITING)
    assert (await first.command("join", consultationId=CONSULTATION))["ok"]
    await patient_hub.wait_state(S.CONNECTING)

    # Killed while connecting: the patient's device checks change twice while it is down.
    await first.kill()
    await patient.report_devices(DeviceReport("pass", "pass", "pass", "video"))
    await patient.report_devices(DeviceReport("warn", "pass", "pass", "audio-only"))

    second: AgentChild = await launch(provider=True)
    status = await second.command("status")
    assert status["consultations"][CONSULTATION]["state"] == "connecting"
    assert status["queue"] == []  # joined: no longer waiting, and the check-in is not re-queued
    await second.wait_line(lambda line: len(second.events("device-status")) == 2)
    assert device_verdicts(second) == [
        ("pass", "pass", "pass", "video"),
        ("warn", "pass", "pass", "audio-only"),
    ]
    assert second.events("state-changed") == []  # it resumed in the state it was in

    assert (await second.command("start", consultationId=CONSULTATION))["ok"]
    await patient_hub.wait_state(S.IN_PROGRESS)
    await second.wait_state(S.IN_PROGRESS)

    # Killed while in progress: one more device change while it is down.
    await second.kill()
    await patient.report_devices(DeviceReport("fail", "pass", "pass", "audio-only"))

    third: AgentChild = await launch(provider=True)
    await third.wait_line(lambda line: len(third.events("device-status")) == 1)
    assert device_verdicts(third) == [("fail", "pass", "pass", "audio-only")]
    assert (await third.command("status"))["consultations"][CONSULTATION]["state"] == "in-progress"
    assert (await third.command("wrap-up", consultationId=CONSULTATION))["ok"]
    await patient_hub.wait_state(S.WRAPPING_UP)
    ended = await third.command("end", consultationId=CONSULTATION, followUpRequired=True)
    assert ended["ok"], ended
    # Measured from the PROVIDER_JOINED the first process published, kept across both restarts.
    assert (ended["duration"], ended["followUpRequired"]) == (1, True)
    completed = await patient_hub.wait_state(S.COMPLETED)
    assert completed.summary == Summary(duration=1, follow_up_required=True)
    await third.wait_line(lambda line: line.get("event") == "session-closed")
    assert [e["state"] for e in third.events("state-changed")] == ["wrapping-up", "completed"]
    assert (await third.command("status"))["consultations"] == {}
    saved = tmp_path / "provider-state" / CONSULTATION_STATE_DIR / CONSULTATIONS_DIR / CONSULTATION
    assert state_file.load(saved) is None
    await patient_hub.wait_for(lambda e: isinstance(e, events.EndpointIdle))
