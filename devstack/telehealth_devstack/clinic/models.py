"""Request bodies of the clinic backend (PROTOCOL.md, "Clinic backend") and the audit event.

Unknown extra fields are ignored, as everywhere in the protocol; IDs are checked with the
protocol's own ``validate_id`` so an error names the field and the offending characters.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from telehealth_client.protocol.channels import InvalidIdError, validate_id
from telehealth_client.protocol.messages import AuditEventType  # one list for the sink and the agent

from ..grants import InvitedRole, Role


def _id(value: str) -> str:
    try:
        return validate_id(value)
    except InvalidIdError as exc:
        raise ValueError(exc.reason) from None


def _utc_iso(value: str) -> str:
    """An ISO-8601 UTC time, returned as PROTOCOL.md writes it: ``2026-11-22T14:03:07.123Z``."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be an ISO-8601 time such as 2026-11-22T14:03:07.123Z") from None
    if parsed.tzinfo is None or parsed.utcoffset() != UTC.utcoffset(None):
        raise ValueError("must be in UTC (end with Z)")
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _uuid4(value: str) -> str:
    try:
        parsed = UUID(value)
    except ValueError:
        raise ValueError("must be a UUID") from None
    if parsed.version != 4:
        raise ValueError("must be a version-4 UUID")
    return str(parsed)


def _ip(value: str) -> str:
    return str(ip_address(value))


_CHANNEL = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def _channel(value: str) -> str:
    if not _CHANNEL.fullmatch(value):
        raise ValueError("must be a channel name: 1-200 of letters, digits, '_', '-' and '.'")
    return value


# Strict types: a number is not silently accepted where the protocol says string.
Id = Annotated[str, Field(strict=True), AfterValidator(_id)]
IsoTime = Annotated[str, Field(strict=True), AfterValidator(_utc_iso)]
Channel = Annotated[str, Field(strict=True), AfterValidator(_channel)]
ShortText = Annotated[str, Field(strict=True), StringConstraints(min_length=1, max_length=128)]


class Body(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TokenRequest(Body):
    """``POST /api/telemedicine/token``; which optional fields are needed depends on ``role``."""

    userId: Id
    role: Role
    appointmentId: Id | None = None
    consultationChannel: Annotated[str, Field(strict=True)] | None = None
    providerId: Id | None = None
    departmentId: Id | None = None


class TurnCredentialsRequest(Body):
    userId: Id


class RevokeAccessRequest(Body):
    userId: Id
    consultationChannel: Annotated[str, Field(strict=True)]


class AssignRequest(Body):
    """``POST /api/telemedicine/assign``: the consultation's provider assigns a nurse to it."""

    consultationChannel: Annotated[str, Field(strict=True)]
    nurseId: Id


class InviteRequest(Body):
    """``POST /api/telemedicine/invite``: the consultation's provider invites another provider."""

    consultationChannel: Annotated[str, Field(strict=True)]
    invitedProviderId: Id
    role: InvitedRole


class ConsentRequest(Body):
    """``POST /api/telemedicine/consent``: the patient's telehealth consent, kept in App Context."""

    patientId: Id
    granted: Annotated[bool, Field(strict=True)]
    expiresAt: IsoTime | None


class AuditActor(Body):
    userId: Id
    role: Role
    ipAddress: Annotated[str, Field(strict=True), AfterValidator(_ip)] | None = None


class AuditResource(Body):
    type: ShortText
    id: Annotated[str, Field(strict=True), StringConstraints(min_length=1, max_length=200)]
    channel: Channel | None = None


class AuditEvent(Body):
    """One audit event as PROTOCOL.md defines it (IDs only, never raw PHI)."""

    id: Annotated[str, Field(strict=True), AfterValidator(_uuid4)]
    timestamp: IsoTime
    eventType: AuditEventType
    severity: Literal["info", "warning", "critical"]
    organizationId: Id
    actor: AuditActor
    resource: AuditResource
    action: ShortText
    outcome: Literal["success", "failure"]
    metadata: dict[str, Any]
    # The recording device and its gapless counter (from 1). Optional for now: agents that do
    # not send them yet are still heard; without deviceId the event is the credential's device's.
    deviceId: Id | None = None
    sequence: Annotated[int, Field(strict=True, ge=1, le=2**62)] | None = None
