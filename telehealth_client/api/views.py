"""The agent's parts as answer models (pure reads, no I/O)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from telehealth_client.api.models import (
    CallView,
    ChatEntryView,
    ConsultationView,
    EscalationView,
    MuteState,
    RosterMember,
)

if TYPE_CHECKING:
    from telehealth_client.api.agent_view import AgentView
    from telehealth_client.consultation.chat import ChatEntry, ConsultationChat
    from telehealth_client.consultation.session import ConsultationSession
    from telehealth_client.emergency.desk import Escalation


def call_view(call: Any) -> CallView | None:
    """A ``ConsultationCall``'s phase and status (typed loosely: the agent never imports media)."""
    if call is None:
        return None
    status = call.status
    return CallView(
        phase=str(call.phase),
        status=str(status.status),
        media=list(status.media),
        muted=mute_state(call),
    )


def mute_state(call: Any) -> MuteState:
    """What a ``ConsultationCall`` sends as silence or black frames."""
    return MuteState(audio=call.mute.audio, video=call.mute.video)


def consultation_view(session: ConsultationSession, call: Any = None) -> ConsultationView:
    consultation = session.consultation
    return ConsultationView(
        consultation_id=consultation.consultation_id,
        state=str(consultation.state),
        provider_id=consultation.provider_id,
        patient_id=consultation.patient_id,
        roster=[
            RosterMember(user_id=m.user_id, role=str(m.role), status=str(m.status), present=m.present)
            for m in consultation.roster.members
        ],
        queue_position=consultation.queue_position,
        estimated_wait_minutes=consultation.estimated_wait_minutes,
        call=call_view(call),
    )


def consultations(agent: AgentView, calls: dict[str, Any]) -> list[ConsultationView]:
    """The consultations this agent holds now; forgets ``calls`` of those it no longer holds."""
    if agent.patient is not None:
        session = agent.patient.session
        return [] if session is None else [consultation_view(session, agent.patient.call)]
    if agent.provider is not None:
        held = {cid: session for cid, session in agent.provider.sessions.items() if not session.closed}
        for ended in [cid for cid in calls if cid not in held]:
            del calls[ended]  # the calls the API started, kept only while their consultation is
        return [consultation_view(session, calls.get(cid)) for cid, session in sorted(held.items())]
    return []


def chat_entry_view(chat: ConsultationChat, entry: ChatEntry) -> ChatEntryView:
    return ChatEntryView(
        id=entry.id,
        sender_id=entry.sender_id,
        sender_role=str(entry.sender_role),
        text=entry.text,
        sent_at=entry.sent_at,
        timetoken=entry.timetoken,
        status=str(entry.status),
        own=entry.own,
        read_by=sorted(chat.read_by(entry.id)),
        failure=entry.failure,
    )


def escalation_view(escalation: Escalation) -> EscalationView:
    return EscalationView(
        id=escalation.id,
        consultation_id=escalation.consultation_id,
        department_id=escalation.department_id,
        escalated_by=escalation.escalated_by,
        severity=escalation.severity,
        reason=escalation.reason,
        timestamp=escalation.timestamp,
        status=escalation.status,
        delivered=escalation.delivered,
        notified=escalation.notified,
        resolved_by=escalation.resolved_by,
        resolution=escalation.resolution,
        own=escalation.own,
    )


def pubsub_status(agent: AgentView) -> str:
    """The pub/sub connection this agent depends on now: ``idle`` for a kiosk between patients
    (it holds none, by design), the consultation's bus on a kiosk, else the agent's bus."""
    if agent.idle:
        return "idle"
    if agent.patient is not None and agent.patient.session is not None:
        return str(agent.patient.session.bus.status)
    return str(agent.bus.status) if agent.bus is not None else "stopped"
