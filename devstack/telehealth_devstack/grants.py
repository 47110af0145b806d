"""Access Manager permissions by role: PROTOCOL.md's "Token permissions by role". Pure: no SDK, no I/O.

Four kinds of token:

- patient: its one consultation (with ``.video``, ``.files`` and their presence), write-only on
  its provider's waiting room, its own notification channel, and ``get`` on its App Context user;
- standing provider / standing nurse: everything its own user ID and department need, no
  consultation named (a provider's own consultations by pattern);
- a standing token plus one named consultation: an invited provider's (another provider's
  consultation) or a nurse's (a consultation of a provider in its department). A PubNub client
  holds one token at a time, so the named consultation comes on top of the standing grants.

Whether the caller may have what it asks for (its department, an invitation, consent) is the
clinic's decision; this module only says what each token holds.

Patterns are Access Manager patterns, which are regular expressions. The seeds write
``consultation.{providerId}.*``; as a regex that also matches provider ``p1x``'s channels for
provider ``p1`` (``.`` is any character), so each pattern here is anchored and its dots escaped.
IDs are validated to ``[A-Za-z0-9_-]`` first, which holds no regex metacharacters. An exact
channel name is always a resource, never a pattern.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from telehealth_client.protocol import channels
from telehealth_client.protocol.channels import ConsultationChannels, InvalidIdError, validate_id

Role = Literal["patient", "provider", "nurse"]
ROLES: tuple[Role, ...] = ("patient", "provider", "nurse")
TTL_MINUTES: dict[Role, int] = {"patient": 15, "provider": 60, "nurse": 60}
InvitedRole = Literal["specialist", "second-opinion", "observer"]
INVITED_ROLES: tuple[InvitedRole, ...] = ("specialist", "second-opinion", "observer")
# Every user's notification channel, and nothing else that starts with "notification.".
NOTIFICATION_WRITE_PATTERN = r"^notification\.[A-Za-z0-9_-]+$"


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
GET = Permissions(get=True)
GET_UPDATE = Permissions(get=True, update=True)


@dataclass(frozen=True)
class RoleGrant:
    """What one token allows: channels and App Context users (exact and by pattern), for whom, how long.

    ``consultation_channel`` is the consultation the token names, None for a standing token.
    """

    role: Role
    authorized_uuid: str
    ttl_minutes: int
    consultation_channel: str | None
    channels: dict[str, Permissions] = field(default_factory=dict)
    patterns: dict[str, Permissions] = field(default_factory=dict)
    uuids: dict[str, Permissions] = field(default_factory=dict)
    channel_config: dict[str, str] = field(default_factory=dict)


def prefix_pattern(prefix: str) -> str:
    """An anchored Access Manager regex for every channel below ``prefix`` (dot-separated)."""
    return "^" + prefix.replace(".", r"\.") + r"\..*$"


def presence_pattern(prefix: str) -> str:
    """An anchored regex for the presence channels of every channel below ``prefix``."""
    return "^" + prefix.replace(".", r"\.") + r"\..*-pnpres$"


def _consultation_grants(consultation: ConsultationChannels) -> dict[str, Permissions]:
    """Read+write on the consultation and its sub-channels, read on their presence channels."""
    grants: dict[str, Permissions] = {}
    for name in (consultation.main, consultation.video, consultation.files):
        grants[name] = READ_WRITE
    for name in (consultation.main, consultation.video, consultation.files):
        grants[channels.presence(name)] = READ
    return grants


def _consultation_config(consultation: ConsultationChannels) -> dict[str, str]:
    return {
        "consultationChannel": consultation.main,
        "videoChannel": consultation.video,
        "filesChannel": consultation.files,
    }


def patient_grant(patient_id: str, provider_id: str, organization_id: str) -> RoleGrant:
    """The patient's token for its consultation with ``provider_id``.

    Not the waiting room's read nor its presence: it would show which other patients are
    waiting, which PROTOCOL.md forbids. Write on the provider's notification channel is for
    ``PATIENT_READY``.
    """
    consultation = ConsultationChannels(
        validate_id(provider_id, "providerId"), validate_id(patient_id, "userId")
    )
    notification = channels.notification(patient_id)
    provider_notification = channels.notification(provider_id)
    waiting_room = channels.waiting_room(provider_id)
    audit = channels.audit(organization_id)
    grants = _consultation_grants(consultation)
    grants.update(
        {
            waiting_room: WRITE,
            notification: READ,
            channels.presence(notification): READ,
            provider_notification: WRITE,
            audit: WRITE,
        }
    )
    return RoleGrant(
        role="patient",
        authorized_uuid=patient_id,
        ttl_minutes=TTL_MINUTES["patient"],
        consultation_channel=consultation.main,
        channels=grants,
        uuids={patient_id: GET},
        channel_config={
            **_consultation_config(consultation),
            "waitingRoom": waiting_room,
            "notificationChannel": notification,
            "providerNotificationChannel": provider_notification,
            "auditChannel": audit,
        },
    )


def standing_provider_grant(provider_id: str, department_id: str, organization_id: str) -> RoleGrant:
    """A provider's token for its own user ID: no consultation needed, its own ones by pattern."""
    validate_id(provider_id, "userId")
    notification = channels.notification(provider_id)
    waiting_room = channels.waiting_room(provider_id)
    queue = channels.queue(department_id)
    presence = channels.provider_presence(department_id)
    emergency = channels.emergency(department_id)
    audit = channels.audit(organization_id)
    own_consultations = f"consultation.{provider_id}"
    return RoleGrant(
        role="provider",
        authorized_uuid=provider_id,
        ttl_minutes=TTL_MINUTES["provider"],
        consultation_channel=None,
        channels={
            notification: READ,
            channels.presence(notification): READ,
            waiting_room: READ_WRITE,
            channels.presence(waiting_room): READ,
            queue: READ_WRITE,
            presence: READ_WRITE,
            channels.presence(presence): READ,
            emergency: READ_WRITE,
            audit: WRITE,
        },
        patterns={
            NOTIFICATION_WRITE_PATTERN: WRITE,
            prefix_pattern(queue): READ_WRITE,
            prefix_pattern(own_consultations): READ_WRITE,
            presence_pattern(own_consultations): READ,
        },
        uuids={provider_id: GET_UPDATE},
        channel_config={
            "notificationChannel": notification,
            "waitingRoom": waiting_room,
            "queueChannel": queue,
            "providerPresenceChannel": presence,
            "emergencyChannel": emergency,
            "auditChannel": audit,
        },
    )


def standing_nurse_grant(nurse_id: str, department_id: str, organization_id: str) -> RoleGrant:
    """A nurse's token for its own user ID: its department's queues (with the seeds' get/update)."""
    validate_id(nurse_id, "userId")
    notification = channels.notification(nurse_id)
    queue = channels.queue(department_id)
    presence = channels.provider_presence(department_id)
    emergency = channels.emergency(department_id)
    audit = channels.audit(organization_id)
    return RoleGrant(
        role="nurse",
        authorized_uuid=nurse_id,
        ttl_minutes=TTL_MINUTES["nurse"],
        consultation_channel=None,
        channels={
            notification: READ,
            channels.presence(notification): READ,
            queue: READ_WRITE_GET_UPDATE,
            presence: READ,
            channels.presence(presence): READ,
            emergency: READ_WRITE,
            audit: WRITE,
        },
        patterns={NOTIFICATION_WRITE_PATTERN: WRITE, prefix_pattern(queue): READ_WRITE_GET_UPDATE},
        uuids={nurse_id: GET},
        channel_config={
            "notificationChannel": notification,
            "queueChannel": queue,
            "providerPresenceChannel": presence,
            "emergencyChannel": emergency,
            "auditChannel": audit,
        },
    )


def with_consultation(standing: RoleGrant, consultation: ConsultationChannels) -> RoleGrant:
    """``standing`` plus one named consultation: an invited provider's or an assigned nurse's token.

    A nurse also gets the consultation's provider's waiting room (read, write, presence), as the
    table says; an invited provider does not.
    """
    grants = {**standing.channels, **_consultation_grants(consultation)}
    config = {**standing.channel_config, **_consultation_config(consultation)}
    if standing.role == "nurse":
        waiting_room = channels.waiting_room(consultation.provider_id)
        grants[waiting_room] = READ_WRITE
        grants[channels.presence(waiting_room)] = READ
        config["waitingRoom"] = waiting_room
    return replace(standing, consultation_channel=consultation.main, channels=grants, channel_config=config)


def parse_consultation(value: str) -> ConsultationChannels:
    """``consultation.{providerId}.{patientId}``; GrantRequestError naming ``consultationChannel``."""
    try:
        return ConsultationChannels.parse(value)
    except InvalidIdError as exc:
        reason = exc.reason if exc.field == "consultationId" else f"{exc.field} part {exc.reason}"
        raise GrantRequestError("consultationChannel", reason) from exc


def build_grant(
    *,
    user_id: str,
    role: str,
    organization_id: str,
    consultation_channel: str | None = None,
    provider_id: str | None = None,
    department_id: str | None = None,
) -> RoleGrant:
    """The grant for a token request; GrantRequestError names the field that is missing or wrong.

    A provider naming another provider's consultation gets the invited provider's grant: the
    caller must have checked that an invitation stands.
    """
    try:
        validate_id(user_id, "userId")
        validate_id(organization_id, "organizationId")
        if role == "patient":
            return _patient_from_request(user_id, consultation_channel, provider_id, organization_id)
        if role == "provider":
            standing = standing_provider_grant(
                user_id, _required(department_id, "departmentId", role), organization_id
            )
        elif role == "nurse":
            standing = standing_nurse_grant(
                user_id, _required(department_id, "departmentId", role), organization_id
            )
        else:
            raise GrantRequestError("role", f"must be one of {', '.join(ROLES)}")
    except InvalidIdError as exc:
        raise GrantRequestError(exc.field, exc.reason) from exc
    if consultation_channel is None:
        return standing
    consultation = parse_consultation(consultation_channel)
    if role == "provider" and consultation.provider_id == user_id:
        # Its own consultation is in the standing grant already (by pattern): name its channels only.
        config = {**standing.channel_config, **_consultation_config(consultation)}
        return replace(standing, consultation_channel=consultation.main, channel_config=config)
    return with_consultation(standing, consultation)


def _required(value: str | None, name: str, role: str) -> str:
    if value is None:
        raise GrantRequestError(name, f"is required for role {role}")
    return value


def _patient_from_request(
    user_id: str, consultation_channel: str | None, provider_id: str | None, organization_id: str
) -> RoleGrant:
    if consultation_channel is None:
        return patient_grant(user_id, _required(provider_id, "providerId", "patient"), organization_id)
    consultation = parse_consultation(consultation_channel)
    if consultation.patient_id != user_id:
        raise GrantRequestError("consultationChannel", "is not this patient's consultation")
    if provider_id is not None and validate_id(provider_id, "providerId") != consultation.provider_id:
        raise GrantRequestError("providerId", "does not match the consultation channel")
    return patient_grant(user_id, consultation.provider_id, organization_id)
