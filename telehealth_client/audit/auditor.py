"""What this endpoint writes to the audit trail, one method per thing it observed or caused.

``Auditor`` builds each audit event of PROTOCOL.md ("Audit events") from IDs, codes and numbers
only (``audit.trail.audit_event`` refuses anything else) and appends it to the trail; each
method returns once the event is on disk. The actor is this endpoint's user (a kiosk acts as the
patient during a consultation). Free text (chat, a reason, a resolution) never reaches here: the
methods take no parameter that could carry it.

Public API: ``Auditor(trail, organization_id=..., actor_id=..., actor_role=...)``, ``as_actor``,
the event methods below, ``safely(name, *args)`` (logs a failure instead of raising),
``later(name, *args)`` (in a task) and ``await settle()`` (until those are recorded).
``AuditRecorder``: what the trail must offer (``record``).
"""

from __future__ import annotations

import logging
from typing import Protocol

from telehealth_client.audit.trail import audit_event
from telehealth_client.logs import describe_exception
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import (
    AuditEvent,
    AuditEventType,
    AuditOutcome,
    AuditSeverity,
    EmergencySeverity,
    SenderRole,
)
from telehealth_client.security import tokens
from telehealth_client.tasks import OwnedTasks

log = logging.getLogger(__name__)

Metadata = dict[str, str | int | bool]


def _code(text: str) -> str:
    """A reason as a metadata code: lower case, words joined by dashes (IDs-only metadata)."""
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())[:64] or "unknown"


class AuditRecorder(Protocol):
    async def record(self, event: AuditEvent) -> int: ...


class Auditor:
    def __init__(
        self, trail: AuditRecorder, *, organization_id: str, actor_id: str, actor_role: SenderRole
    ) -> None:
        self._trail = trail
        self.organization_id = organization_id
        self.actor_id = actor_id
        self.actor_role = actor_role
        self._tasks = OwnedTasks()

    def as_actor(self, actor_id: str, actor_role: SenderRole | None = None) -> Auditor:
        """The same trail, another actor (a kiosk acting as the patient it checked in)."""
        return Auditor(
            self._trail,
            organization_id=self.organization_id,
            actor_id=actor_id,
            actor_role=actor_role or self.actor_role,
        )

    async def _record(
        self,
        event_type: AuditEventType,
        *,
        resource_type: str,
        resource_id: str,
        action: str,
        channel: str | None = None,
        outcome: AuditOutcome = "success",
        severity: AuditSeverity = "info",
        metadata: Metadata | None = None,
    ) -> None:
        event = audit_event(
            event_type,
            organization_id=self.organization_id,
            actor_id=self.actor_id,
            actor_role=self.actor_role,
            resource_type=resource_type,
            resource_id=resource_id,
            channel=channel,
            action=action,
            outcome=outcome,
            severity=severity,
            metadata=metadata,
        )
        await self._trail.record(event)

    async def safely(self, name: str, *args: object) -> None:
        """Call one of the methods below, logging (never raising) a failure: for callers that must
        go on whatever the trail does (a consultation ending)."""
        try:
            await getattr(self, name)(*args)
        except Exception as exc:
            log.error("audit event not recorded event=%s error=%s", name, describe_exception(exc))

    def later(self, name: str, *args: object) -> None:
        """``safely(name, *args)`` in a task this auditor owns, for a caller that cannot await
        (a token keeper's event); ``settle()`` awaits them."""
        self._tasks.spawn(self.safely(name, *args), f"audit-{name}")

    async def settle(self) -> None:
        """Wait for the records started by ``later`` (never cancelled: an event is not abandoned)."""
        await self._tasks.finish()

    # -- the consultation -----------------------------------------------------------------------------

    async def _in_consultation(
        self,
        event_type: AuditEventType,
        consultation_id: str,
        action: str,
        *,
        resource_type: str = "consultation",
        resource_id: str | None = None,
        channel: str | None = None,
        **metadata: str | int | bool,
    ) -> None:
        """An event of consultation ``consultation_id``: the consultation is its resource and its
        channel unless others are named, and its ``sessionId`` comes first in the metadata."""
        await self._record(
            event_type,
            resource_type=resource_type,
            resource_id=consultation_id if resource_id is None else resource_id,
            channel=consultation_id if channel is None else channel,
            action=action,
            metadata={"sessionId": consultation_id, **metadata},
        )

    async def session_started(self, consultation_id: str) -> None:
        await self._in_consultation("CONSULTATION_SESSION_START", consultation_id, "join")

    async def session_ended(self, consultation_id: str, reason: str) -> None:
        """``reason``: the session's close code (completed, cancelled, removed, access-denied...)."""
        await self._in_consultation("CONSULTATION_SESSION_END", consultation_id, "leave", endReason=reason)

    async def message_sent(self, consultation_id: str, message_id: str) -> None:
        await self._in_consultation(
            "PHI_MESSAGE_SENT", consultation_id, "send", resource_type="chat-message", resource_id=message_id
        )

    async def message_read(self, consultation_id: str, up_to_id: str) -> None:
        await self._in_consultation(
            "PHI_MESSAGE_READ", consultation_id, "read", resource_type="chat-message", resource_id=up_to_id
        )

    async def transcript_listed(self, consultation_id: str, via: str) -> None:
        """The chat's messages, with their text, were read out (``via`` a code: where, e.g.
        ``local-api``): access to the whole transcript, not a ``chat-read`` receipt, so its own
        action and resource (the consultation's transcript)."""
        await self._in_consultation(
            "PHI_MESSAGE_READ", consultation_id, "list", resource_type="chat-transcript", via=via
        )

    async def provider_added(self, consultation_id: str, provider_id: str, role: str) -> None:
        await self._in_consultation(
            "PROVIDER_ADDED_TO_CONSULTATION",
            consultation_id,
            "invite",
            providerId=provider_id,
            invitedRole=role,
        )

    async def consent_checked(self, patient_id: str, refusal: str | None) -> None:
        """The agent's own consent check at check-in: given, or refused with its code."""
        metadata: Metadata = {"consentRef": f"app-context:{patient_id}"}
        if refusal is not None:
            metadata["refusal"] = refusal.replace(" ", "-")
        await self._record(
            "PATIENT_CONSENT_GIVEN",
            resource_type="consent",
            resource_id=patient_id,
            action="verify",
            outcome="success" if refusal is None else "failure",
            severity="info" if refusal is None else "warning",
            metadata=metadata,
        )

    async def video_session_started(self, consultation_id: str) -> None:
        await self._in_consultation(
            "VIDEO_SESSION_STARTED",
            consultation_id,
            "connect",
            resource_type="video-session",
            channel=f"{consultation_id}.video",
        )

    async def video_session_ended(self, consultation_id: str, reason: str) -> None:
        """``reason``: a code (hangup, remote-hangup, closed) or a media failure's reason."""
        await self._in_consultation(
            "VIDEO_SESSION_ENDED",
            consultation_id,
            "disconnect",
            resource_type="video-session",
            channel=f"{consultation_id}.video",
            endReason=_code(reason),
        )

    async def preview_watched(self, consultation_id: str, preview: str) -> None:
        """A video preview of the call (``preview``: ``local`` or ``remote``) watched through the
        local API: access to the pictures of the consultation (PROTOCOL lists no event for video,
        so the nearest, ``PHI_FILE_ACCESSED``, with the preview as its resource)."""
        await self._in_consultation(
            "PHI_FILE_ACCESSED",
            consultation_id,
            "watch-preview",
            resource_type="video-preview",
            resource_id=f"{consultation_id}.{preview}",
            channel=f"{consultation_id}.video",
            preview=preview,
        )

    # -- access ---------------------------------------------------------------------------------------

    async def token_granted(self, scope: str, ttl_minutes: int) -> None:
        """``scope``: the consultation channel the token names, or ``standing``."""
        await self._record(
            "ACCESS_TOKEN_GRANTED",
            resource_type="access-token",
            resource_id=scope,
            channel=scope if scope != "standing" else None,
            action="grant",
            metadata={"ttlMinutes": ttl_minutes},
        )

    async def token_revoked(self, consultation_id: str, user_id: str, revoked: int) -> None:
        await self._in_consultation(
            "ACCESS_TOKEN_REVOKED",
            consultation_id,
            "revoke",
            resource_type="access-token",
            userId=user_id,
            revoked=revoked,
        )

    async def access_denied(self, operation: str, scope: str) -> None:
        await self._record(
            "ACCESS_DENIED",
            resource_type="access-token",
            resource_id=scope,
            channel=scope if scope.startswith("consultation.") else None,
            action=operation,
            outcome="failure",
            severity="warning",
        )

    # -- devices and emergencies ----------------------------------------------------------------------

    async def file_accessed(self, resource_type: str, resource_id: str, via: str) -> None:
        """A PHI file was read (``resource_type`` e.g. ``camera-snapshot``, its ID; ``via`` a code:
        where it was read, e.g. ``local-api``)."""
        await self._record(
            "PHI_FILE_ACCESSED",
            resource_type=resource_type,
            resource_id=resource_id,
            action="read",
            metadata={"via": via},
        )

    async def device_check_completed(self, device_id: str, verdicts: Metadata) -> None:
        """``verdicts``: camera/microphone/speaker/network codes (pass, warn, fail, skipped...)."""
        await self._record(
            "DEVICE_CHECK_COMPLETED",
            resource_type="device",
            resource_id=device_id,
            action="check",
            metadata=verdicts,
        )

    async def _of_escalation(
        self,
        escalation_id: str,
        department_id: str,
        action: str,
        metadata: Metadata,
        event_type: AuditEventType = "EMERGENCY_ESCALATION_TRIGGERED",
        outcome: AuditOutcome = "success",
        severity: AuditSeverity = "info",
    ) -> None:
        """An event of escalation ``escalation_id``, on its department's emergency channel."""
        await self._record(
            event_type,
            resource_type="escalation",
            resource_id=escalation_id,
            channel=channels.emergency(department_id),
            action=action,
            outcome=outcome,
            severity=severity,
            metadata=metadata,
        )

    async def emergency_escalated(
        self, escalation_id: str, consultation_id: str, department_id: str, severity: EmergencySeverity
    ) -> None:
        metadata: Metadata = {
            "sessionId": consultation_id,
            "severity": severity,
            "departmentId": department_id,
        }
        await self._of_escalation(escalation_id, department_id, "escalate", metadata, severity="critical")

    async def emergency_resolved(self, escalation_id: str, department_id: str) -> None:
        await self._of_escalation(escalation_id, department_id, "resolve", {"departmentId": department_id})

    async def emergency_resolution_refused(
        self, escalation_id: str, department_id: str, resolver_id: str, refusal: str
    ) -> None:
        """A resolution seen on the channel and ignored: ``resolver_id`` (its publisher) may not
        resolve. The actor is this endpoint, which refused it; ``refusal`` is a code."""
        metadata: Metadata = {"departmentId": department_id, "userId": resolver_id, "refusal": _code(refusal)}
        await self._of_escalation(
            escalation_id,
            department_id,
            "resolve",
            metadata,
            "ACCESS_DENIED",
            outcome="failure",
            severity="warning",
        )


def audit_token_event(auditor: Auditor, event: tokens.TokenEvent, scope: str) -> None:
    """The keeper's grants and final denials, in the audit trail (its events cannot await)."""
    if isinstance(event, tokens.TokenGranted | tokens.TokenRefreshed):
        auditor.later("token_granted", scope, event.ttl_minutes)
    elif isinstance(event, tokens.TokenAccessDenied):
        auditor.later("access_denied", event.source, scope)
