"""A whole consultation between a patient agent and a provider agent, with a specialist invited and
removed: both sides see the same states in the same order; the removed specialist loses access."""

from __future__ import annotations

import pytest

from telehealth_client import events
from telehealth_client.consultation import state_file
from telehealth_client.consultation.roster import ChangeKind, RosterRole
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.protocol.messages import Summary
from telehealth_client.pubsub.bus import AccessDeniedError, ConnectionStatus
from tests.support.consultation import (
    CHECK_IN,
    CONSULTATION,
    PATIENT,
    SPECIALIST,
    Parts,
    RecordingHub,
)

pytestmark = pytest.mark.integration

EXPECTED = ["checked-in", "waiting", "connecting", "in-progress", "wrapping-up", "completed"]


def roster_change(user_id: str, kind: ChangeKind) -> object:
    return lambda e: (
        isinstance(e, events.RosterChanged)
        and any(c.user_id == user_id and c.kind is kind for c in e.changes)
    )


async def test_check_in_to_summary_with_a_specialist_invited_and_removed(parts: Parts) -> None:
    provider_hub, specialist_hub, patient_hub = RecordingHub(), RecordingHub(), RecordingHub()
    provider = await parts.provider(provider_hub)
    specialist = await parts.provider(specialist_hub, SPECIALIST)
    specialist_clinic = parts.clinics[SPECIALIST]
    await parts.record_consent()
    patient = parts.patient(patient_hub)
    assert patient.idle

    session = await patient.check_in(**CHECK_IN)
    assert session.bus.user_id == PATIENT
    await provider_hub.wait_state(S.CHECKED_IN)
    assert [w.consultation_id for w in provider.queue] == [CONSULTATION]

    for round_ in (1, 2):
        assert await provider.send_queue_updates(minutes_per_patient=5) == 1
        await patient_hub.wait_for(lambda e: isinstance(e, events.QueueUpdated), count=round_)
    assert patient.state is S.WAITING
    assert session.consultation.queue_position == 1

    await provider.join(CONSULTATION)
    await patient_hub.wait_state(S.CONNECTING)
    await provider.start_consultation(CONSULTATION)
    await patient_hub.wait_state(S.IN_PROGRESS)

    await provider.invite(CONSULTATION, SPECIALIST, "specialist")
    await specialist_hub.wait_for(lambda e: isinstance(e, events.InvitationReceived))
    invited = await specialist.accept(CONSULTATION)
    assert invited.consultation.state is S.IN_PROGRESS
    await patient_hub.wait_for(roster_change(SPECIALIST, ChangeKind.JOINED))
    member = session.consultation.roster.member(SPECIALIST)
    assert member is not None and member.role is RosterRole.SPECIALIST

    revoked = await provider.remove(CONSULTATION, SPECIALIST)
    assert revoked >= 1
    assert await invited.wait_closed() == "removed"
    await patient_hub.wait_for(roster_change(SPECIALIST, ChangeKind.REMOVED))
    # The token the specialist held for the consultation is refused now.
    stale = parts.raw_bus(SPECIALIST, specialist_clinic.token_for(CONSULTATION))
    with pytest.raises(AccessDeniedError):
        await stale.publish(CONSULTATION, {"type": "probe"})
    # And the specialist's own agent is back on its standing token, connected.
    await specialist_hub.wait_for(lambda e: isinstance(e, events.SessionClosed))
    assert CONSULTATION not in specialist.sessions

    await provider.wrap_up(CONSULTATION)
    await patient_hub.wait_state(S.WRAPPING_UP)
    summary = await provider.end(CONSULTATION, follow_up_required=True)
    completed = await patient_hub.wait_state(S.COMPLETED)
    assert completed.summary == summary == Summary(duration=1, follow_up_required=True)

    await patient_hub.wait_for(lambda e: isinstance(e, events.EndpointIdle))
    assert patient.idle
    assert session.bus.status is ConnectionStatus.STOPPED
    assert state_file.load(parts.tmp_path / "kiosk") is None
    assert patient_hub.states() == EXPECTED
    await provider_hub.wait_state(S.COMPLETED)
    assert provider_hub.states() == EXPECTED
    assert specialist.bus.status is ConnectionStatus.CONNECTED
