"""Access Manager permissions by role, as PROTOCOL.md defines them. Pure: no SDK, no I/O.

Patterns are PubNub Access Manager patterns, which are regular expressions. The seeds
write ``consultation.{providerId}.*``; as a regex that also matches provider ``p1x``'s
channels for provider ``p1`` (``.`` is any character), so each pattern here is anchored
and its dots escaped. IDs are validated to ``[A-Za-z0-9_-]`` first, which holds no
regex metacharacters. An exact channel name is always a resource, never a pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from telehealth_client.protocol import channels
from telehealth_client.protocol.channels import ConsultationChannels, InvalidIdError, validate_id

Role = Literal["patient", "provider", "nurse"]
ROLES: tuple[Role, ...] = ("patient", "provider", "nurse")
TTL_MINUTES: dict[Role, int] = {"patient": 15, "provider": 60, "nurse": 60}


class GrantRequestError(ValueError):
    """A token request that cannot be turned into a grant; names the offending field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Permissions:
    read: bool = False
    write: bool = False
    get: bool = False
    update: bool = False


READ = Permissions(read=True)
WRITE = Permissions(write=True)
READ_WRITE = Permissions(read=True, write=True)
READ_WRITE_GET_UPDATE = Permissions(read=True, write=True, get=True, update=True)


@dataclass(frozen=True)
class RoleGrant:
    """What one token allows: exact channels, channel patterns, for whom, for how long."""

    role: Role
    authorized_uuid: str
    ttl_minutes: int
    consultation_channel: str
    channels: dict[str, Permissions] = field(default_factory=dict)
    patterns: dict[str, Permissions] = field(default_factory=dict)
    channel_config: dict[str, str] = field(default_factory=dict)


def prefix_pattern(prefix: str) -> str:
    """An anchored Access Manager regex for every channel below ``prefix`` (dot-separated)."""
    return "^" + prefix.replace(".", r"\.") + r"\..*$"


def patient_grant(patient_id: str, provider_id: str) -> RoleGrant:
    """Read+write on the consultation and its sub-channels, write-only on the waiting room.

    Presence read covers the channels the patient subscribes to. Not the waiting room's
    presence: it would show which other patients are waiting, which PROTOCOL.md forbids.
    """
    consultation = ConsultationChannels(
        validate_id(provider_id, "providerId"), validate_id(patient_id, "userId")
    )
    notification = channels.notification(patient_id)
    waiting_room = channels.waiting_room(provider_id)
    grants: dict[str, Permissions] = {
        consultation.main: READ_WRITE,
        consultation.video: READ_WRITE,
        consultation.files: READ_WRITE,
        waiting_room: WRITE,
        notification: READ,
    }
    for name in (consultation.main, consultation.video, consultation.files, notification):
        grants[channels.presence(name)] = READ
    return RoleGrant(
        role="patient",
        authorized_uuid=patient_id,
        ttl_minutes=TTL_MINUTES["patient"],
        consultation_channel=consultation.main,
        channels=grants,
        channel_config={
            "consultationChannel": consultation.main,
            "videoChannel": consultation.video,
            "filesChannel": consultation.files,
            "waitingRoom": waiting_room,
            "notificationChannel": notification,
        },
    )


def _parse_consultation(value: str) -> ConsultationChannels:
    try:
        return ConsultationChannels.parse(value)
    except InvalidIdError as exc:
        reason = exc.reason if exc.field == "consultationId" else f"{exc.field} part {exc.reason}"
        raise GrantRequestError("consultationChannel", reason) from exc


def provider_grant(provider_id: str, consultation_channel: str, department_id: str) -> RoleGrant:
    """The seeds' provider grant plus ``.video`` and the presence channels of the consultation."""
    consultation = _parse_consultation(consultation_channel)
    if consultation.provider_id != validate_id(provider_id, "userId"):
        raise GrantRequestError(
            "consultationChannel", "a provider may only get a token for its own consultation"
        )
    queue = channels.queue(department_id)
    notification = channels.notification(provider_id)
    grants: dict[str, Permissions] = {
        consultation.main: READ_WRITE_GET_UPDATE,
        queue: READ_WRITE,
        consultation.files: READ_WRITE,
        consultation.video: READ_WRITE,
        notification: READ,
    }
    for name in (consultation.main, consultation.video, consultation.files):
        grants[channels.presence(name)] = READ
    return RoleGrant(
        role="provider",
        authorized_uuid=provider_id,
        ttl_minutes=TTL_MINUTES["provider"],
        consultation_channel=consultation.main,
        channels=grants,
        patterns={prefix_pattern(f"consultation.{provider_id}"): READ_WRITE},
        channel_config={
            "consultationChannel": consultation.main,
            "videoChannel": consultation.video,
            "filesChannel": consultation.files,
            "waitingRoom": channels.waiting_room(provider_id),
            "notificationChannel": notification,
            "queueChannel": queue,
        },
    )


def nurse_grant(nurse_id: str, consultation_channel: str, department_id: str) -> RoleGrant:
    """The seeds' nurse grant: the consultation, the department queue and its sub-queues."""
    validate_id(nurse_id, "userId")
    consultation = _parse_consultation(consultation_channel)
    queue = channels.queue(department_id)
    return RoleGrant(
        role="nurse",
        authorized_uuid=nurse_id,
        ttl_minutes=TTL_MINUTES["nurse"],
        consultation_channel=consultation.main,
        channels={consultation.main: READ_WRITE, queue: READ_WRITE_GET_UPDATE},
        patterns={prefix_pattern(queue): READ_WRITE},
        channel_config={
            "consultationChannel": consultation.main,
            "waitingRoom": channels.waiting_room(consultation.provider_id),
            "queueChannel": queue,
        },
    )


def build_grant(
    *,
    user_id: str,
    role: str,
    consultation_channel: str | None = None,
    provider_id: str | None = None,
    department_id: str | None = None,
) -> RoleGrant:
    """The grant for a token request; GrantRequestError names the field that is missing or wrong."""
    try:
        validate_id(user_id, "userId")
        if role == "patient":
            return _patient_from_request(user_id, consultation_channel, provider_id)
        if role == "provider":
            return provider_grant(
                user_id,
                _required(consultation_channel, "consultationChannel", role),
                _required(department_id, "departmentId", role),
            )
        if role == "nurse":
            return nurse_grant(
                user_id,
                _required(consultation_channel, "consultationChannel", role),
                _required(department_id, "departmentId", role),
            )
    except InvalidIdError as exc:
        raise GrantRequestError(exc.field, exc.reason) from exc
    raise GrantRequestError("role", f"must be one of {', '.join(ROLES)}")


def _required(value: str | None, name: str, role: str) -> str:
    if value is None:
        raise GrantRequestError(name, f"is required for role {role}")
    return value


def _patient_from_request(
    user_id: str, consultation_channel: str | None, provider_id: str | None
) -> RoleGrant:
    if consultation_channel is None:
        return patient_grant(user_id, _required(provider_id, "providerId", "patient"))
    consultation = _parse_consultation(consultation_channel)
    if consultation.patient_id != user_id:
        raise GrantRequestError("consultationChannel", "is not this patient's consultation")
    if provider_id is not None and validate_id(provider_id, "providerId") != consultation.provider_id:
        raise GrantRequestError("providerId", "does not match the consultation channel")
    return patient_grant(user_id, consultation.provider_id)
