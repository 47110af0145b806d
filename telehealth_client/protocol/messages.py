"""Every message of PROTOCOL.md as a pydantic model, and the one way in: ``decode``.

Public API (pure, no I/O):

- Models, frozen, snake_case in Python and camelCase on the wire, unknown fields ignored:
  lifecycle actions (``PatientCheckedIn`` ... ``DeviceStatus``, union ``LifecycleAction``),
  ``ChatMessage`` / ``ChatRead``, notifications (``PatientReady`` ... ``EmergencyNotification``,
  union ``Notification``), video signaling (``Offer``, ``Answer``, ``IceCandidateMessage``,
  ``EndCall``, union ``Signal``), emergency (``EmergencyEscalation``, ``EmergencyResolved``),
  ``AuditEvent`` and ``Consent``.
- ``decode(channel, payload, publisher) -> Message | Drop``: picks the messages allowed on the
  channel's kind, validates, and checks that the sender's identity field equals the publisher.
  It never raises; a ``Drop`` names the field and why, never the payload's values (they may be PHI).
- ``encode(message) -> dict``: the wire form (camelCase, times as ``YYYY-MM-DDTHH:MM:SS.mmmZ``).
- ``parse_time`` / ``format_time``: receivers accept any ISO-8601 UTC time, senders write one form.
- ``decode_consent`` / ``consent_refusal`` / ``encode_consent``: App Context
  ``custom.consent_telehealth``, a JSON string ``{"granted", "expiresAt"}``.
- ``emergency_push_meta``: the unencrypted push ``meta`` of an emergency notification (severity
  and escalation ID only, never the reason).
- ``claimed_sender(message)``: the user ID a message says it comes from, if it carries one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeAlias, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from telehealth_client.protocol.channels import (
    PRESENCE_SUFFIX,
    ConsultationChannels,
    InvalidIdError,
    validate_id,
)

# ---------------------------------------------------------------------------------------------
# Field types


class ConsultationState(StrEnum):
    """The consultation's states (PROTOCOL.md, "States follow the seeds")."""

    SCHEDULED = "scheduled"
    CHECKED_IN = "checked-in"
    WAITING = "waiting"
    CONNECTING = "connecting"
    IN_PROGRESS = "in-progress"
    WRAPPING_UP = "wrapping-up"
    COMPLETED = "completed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (ConsultationState.COMPLETED, ConsultationState.CANCELLED)


SenderRole: TypeAlias = Literal["patient", "provider", "nurse"]
InvitedRole: TypeAlias = Literal["specialist", "second-opinion", "observer"]
CancelReason: TypeAlias = Literal[
    "patient-left", "no-show", "provider-cancelled", "consent-revoked", "technical"
]
CheckVerdict: TypeAlias = Literal["pass", "warn", "fail", "skipped"]
NetworkVerdict: TypeAlias = Literal["video", "audio-only", "cannot-connect", "unknown"]
Priority: TypeAlias = Literal["normal", "high", "critical"]
EmergencySeverity: TypeAlias = Literal["urgent", "critical", "life-threatening"]
AuditSeverity: TypeAlias = Literal["info", "warning", "critical"]
AuditOutcome: TypeAlias = Literal["success", "failure"]
AuditEventType: TypeAlias = Literal[
    "CONSULTATION_SESSION_START",
    "CONSULTATION_SESSION_END",
    "PHI_MESSAGE_SENT",
    "PHI_MESSAGE_READ",
    "PHI_FILE_SHARED",
    "PHI_FILE_ACCESSED",
    "ACCESS_TOKEN_GRANTED",
    "ACCESS_TOKEN_REVOKED",
    "PATIENT_CONSENT_GIVEN",
    "PATIENT_CONSENT_REVOKED",
    "VIDEO_SESSION_STARTED",
    "VIDEO_SESSION_ENDED",
    "EMERGENCY_ESCALATION_TRIGGERED",
    "PROVIDER_ADDED_TO_CONSULTATION",
    "DEVICE_CHECK_COMPLETED",
    "ACCESS_DENIED",
]

CANCEL_REASONS: Final[tuple[str, ...]] = get_args(CancelReason)
AUDIT_EVENT_TYPES: Final[tuple[str, ...]] = get_args(AuditEventType)

MAX_CHAT_CHARS: Final = 4000
MAX_SDP_CHARS: Final = 32 * 1024
# Bounds that no real consultation reaches; they keep absurd numbers out of the state.
MAX_MINUTES: Final = 24 * 60
MAX_QUEUE_POSITION: Final = 10_000
# An audit sequence fits a signed 64-bit integer (SQLite's, and most sinks').
MAX_AUDIT_SEQUENCE: Final = 2**63 - 1

_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|z|\+00:00)")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", re.IGNORECASE)
_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def parse_time(value: object) -> datetime:
    """An ISO-8601 UTC time (``Z`` or ``+00:00``, any fraction) as an aware UTC datetime.

    Naive times and other offsets are refused: a local time on the wire is ambiguous. An aware
    UTC datetime passes through, so Python senders can build models from ``datetime.now(UTC)``.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() != timedelta(0):
            raise PydanticCustomError("th_time", "must be a UTC time")
        return value.astimezone(UTC)
    if not isinstance(value, str):
        raise PydanticCustomError("th_time", "must be an ISO-8601 UTC time string")
    match = _TIME.fullmatch(value)
    if match is None:
        raise PydanticCustomError("th_time", "must be an ISO-8601 UTC time such as 2026-11-22T14:03:07.123Z")
    year, month, day, hour, minute, second, fraction, _ = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micros, tzinfo=UTC
        )
    except ValueError:
        raise PydanticCustomError("th_time", "must be a real date and time") from None


def format_time(value: datetime) -> str:
    """The one form senders write: ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    if value.tzinfo is None:
        raise ValueError("time: must be timezone-aware")
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{utc.microsecond // 1000:03d}Z"


def _id(value: object) -> str:
    try:
        return validate_id(value)
    except InvalidIdError:
        raise PydanticCustomError(
            "th_id", "must be 1-64 characters of letters, digits, '_' and '-'"
        ) from None


def _uuid(value: object) -> str:
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        raise PydanticCustomError("th_uuid", "must be a version-4 UUID")
    return value.lower()


def _consultation_id(value: object) -> str:
    try:
        if isinstance(value, str):
            return ConsultationChannels.parse(value).main
    except InvalidIdError:
        pass
    raise PydanticCustomError("th_consultation_id", "must be 'consultation.{providerId}.{patientId}'")


def _code(value: object) -> str:
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        raise PydanticCustomError("th_code", "must be 1-64 characters of letters, digits, '_' and '-'")
    return value


UtcTime = Annotated[
    datetime,
    PlainValidator(parse_time, json_schema_input_type=str),
    PlainSerializer(format_time, return_type=str, when_used="json"),
]
Id = Annotated[str, PlainValidator(_id, json_schema_input_type=str)]
Uuid = Annotated[str, PlainValidator(_uuid, json_schema_input_type=str)]
ConsultationId = Annotated[str, PlainValidator(_consultation_id, json_schema_input_type=str)]
Code = Annotated[str, PlainValidator(_code, json_schema_input_type=str)]


def _text(max_chars: int, min_chars: int = 1) -> Any:
    return Field(min_length=min_chars, max_length=max_chars)


class WireModel(BaseModel):
    """Base of every message: frozen, camelCase aliases, strict types, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        frozen=True,
        extra="ignore",
        strict=True,
        # Each model's validator is built when it is first used, not at import: the agent starts
        # (READY within a second) without the many it does not use idle.
        defer_build=True,
    )


# ---------------------------------------------------------------------------------------------
# Lifecycle actions (consultation.* and waiting-room.*)


class PatientCheckedIn(WireModel):
    action: Literal["PATIENT_CHECKED_IN"] = "PATIENT_CHECKED_IN"
    appointment_id: Id
    patient_id: Id
    consultation_id: ConsultationId
    timestamp: UtcTime


class ProviderJoined(WireModel):
    action: Literal["PROVIDER_JOINED"] = "PROVIDER_JOINED"
    provider_id: Id
    state: Literal["connecting"] = "connecting"
    timestamp: UtcTime


class ConsultationStarted(WireModel):
    action: Literal["CONSULTATION_STARTED"] = "CONSULTATION_STARTED"
    provider_id: Id
    state: Literal["in-progress"] = "in-progress"
    timestamp: UtcTime


class WrapUpStarted(WireModel):
    action: Literal["WRAP_UP_STARTED"] = "WRAP_UP_STARTED"
    provider_id: Id
    state: Literal["wrapping-up"] = "wrapping-up"
    timestamp: UtcTime


class Summary(WireModel):
    duration: Annotated[int, Field(ge=1, le=MAX_MINUTES)]  # whole minutes, rounded up
    follow_up_required: bool


class ConsultationEnded(WireModel):
    action: Literal["CONSULTATION_ENDED"] = "CONSULTATION_ENDED"
    provider_id: Id
    state: Literal["completed"] = "completed"
    summary: Summary
    timestamp: UtcTime


class ProviderInvited(WireModel):
    action: Literal["PROVIDER_INVITED"] = "PROVIDER_INVITED"
    invited_provider_id: Id
    invited_by: Id
    role: InvitedRole
    timestamp: UtcTime


class ProviderRemoved(WireModel):
    action: Literal["PROVIDER_REMOVED"] = "PROVIDER_REMOVED"
    provider_id: Id
    removed_by: Id
    timestamp: UtcTime


class ConsultationCancelled(WireModel):
    action: Literal["CONSULTATION_CANCELLED"] = "CONSULTATION_CANCELLED"
    cancelled_by: Id
    reason: CancelReason
    timestamp: UtcTime


class DeviceStatus(WireModel):
    action: Literal["DEVICE_STATUS"] = "DEVICE_STATUS"
    camera: CheckVerdict
    microphone: CheckVerdict
    speaker: CheckVerdict
    network: NetworkVerdict
    timestamp: UtcTime


LifecycleAction: TypeAlias = (
    PatientCheckedIn
    | ProviderJoined
    | ConsultationStarted
    | WrapUpStarted
    | ConsultationEnded
    | ProviderInvited
    | ProviderRemoved
    | ConsultationCancelled
    | DeviceStatus
)

# ---------------------------------------------------------------------------------------------
# Chat (consultation.*)


class ChatMessage(WireModel):
    type: Literal["chat"] = "chat"
    id: Uuid  # chosen before the first publish attempt; a retried publish keeps it
    sender_id: Id
    sender_role: SenderRole  # an invited specialist writes as "provider"
    text: Annotated[str, _text(MAX_CHAT_CHARS)]
    sent_at: UtcTime


class ChatRead(WireModel):
    type: Literal["chat-read"] = "chat-read"
    id: Uuid
    reader_id: Id
    up_to_id: Uuid
    read_at: UtcTime


# ---------------------------------------------------------------------------------------------
# Notifications (notification.{userId})


class _NotificationBase(WireModel):
    title: Annotated[str, _text(200)]
    body: Annotated[str, _text(1000, min_chars=0)]
    priority: Priority
    # Our senders always write it; the seeds' provider app writes none, and a missing timestamp
    # must never cost a patient its queue position or "provider ready" (PROTOCOL.md).
    timestamp: UtcTime | None = None


class PatientReady(_NotificationBase):
    type: Literal["PATIENT_READY"] = "PATIENT_READY"
    appointment_id: Id
    consultation_id: ConsultationId


class ProviderReady(_NotificationBase):
    type: Literal["PROVIDER_READY"] = "PROVIDER_READY"
    consultation_id: ConsultationId


class QueueUpdate(_NotificationBase):
    type: Literal["QUEUE_UPDATE"] = "QUEUE_UPDATE"
    consultation_id: ConsultationId
    position: Annotated[int, Field(ge=1, le=MAX_QUEUE_POSITION)]  # 1 = next
    estimated_wait_minutes: Annotated[int, Field(ge=0, le=MAX_MINUTES)]


class ConsultationInvite(_NotificationBase):
    type: Literal["CONSULTATION_INVITE"] = "CONSULTATION_INVITE"
    consultation_id: ConsultationId
    invited_by: Id
    role: InvitedRole


class EmergencyNotification(_NotificationBase):
    type: Literal["EMERGENCY_ESCALATION"] = "EMERGENCY_ESCALATION"
    escalation_id: Uuid


Notification: TypeAlias = (
    PatientReady | ProviderReady | QueueUpdate | ConsultationInvite | EmergencyNotification
)

# ---------------------------------------------------------------------------------------------
# Video signaling (consultation.*.video, published with store=0)


class IceCandidate(WireModel):
    """The browser's ``RTCIceCandidate.toJSON()``; ``candidate`` is "" for end-of-candidates."""

    candidate: Annotated[str, _text(2048, min_chars=0)]
    sdp_mid: Annotated[str, _text(64, min_chars=0)] | None = None
    sdp_m_line_index: Annotated[int, Field(ge=0, le=1023)] | None = None
    username_fragment: Annotated[str, _text(256, min_chars=0)] | None = None


class _SignalBase(WireModel):
    sender_id: Id
    timestamp: UtcTime


class Offer(_SignalBase):
    type: Literal["offer"] = "offer"
    sdp: Annotated[str, _text(MAX_SDP_CHARS)]


class Answer(_SignalBase):
    type: Literal["answer"] = "answer"
    sdp: Annotated[str, _text(MAX_SDP_CHARS)]


class IceCandidateMessage(_SignalBase):
    type: Literal["ice-candidate"] = "ice-candidate"
    candidate: IceCandidate


class EndCall(_SignalBase):
    type: Literal["end-call"] = "end-call"


Signal: TypeAlias = Offer | Answer | IceCandidateMessage | EndCall

# ---------------------------------------------------------------------------------------------
# Emergency (emergency.{departmentId})


class EmergencyEscalation(WireModel):
    id: Uuid
    action: Literal["EMERGENCY_ESCALATION"] = "EMERGENCY_ESCALATION"
    consultation_id: ConsultationId
    escalated_by: Id
    severity: EmergencySeverity
    reason: Annotated[str, _text(1000)]  # free text: PHI, travels only in the encrypted body
    timestamp: UtcTime
    status: Literal["active"] = "active"


class EmergencyResolved(WireModel):
    id: Uuid  # the escalation's id
    action: Literal["EMERGENCY_RESOLVED"] = "EMERGENCY_RESOLVED"
    resolved_by: Id
    resolution: Annotated[str, _text(1000)]
    timestamp: UtcTime
    status: Literal["resolved"] = "resolved"


Emergency: TypeAlias = EmergencyEscalation | EmergencyResolved

# ---------------------------------------------------------------------------------------------
# Audit events (audit.{organizationId} and the audit sink)


class AuditActor(WireModel):
    user_id: Id
    role: SenderRole
    ip_address: Annotated[str, _text(64)] | None = None


class AuditResource(WireModel):
    type: Code
    id: Annotated[str, _text(200)]
    channel: Annotated[str, _text(200)] | None = None


class AuditEvent(WireModel):
    """IDs only: never chat text, names, dates of birth or free-text reasons."""

    id: Uuid
    timestamp: UtcTime
    event_type: AuditEventType
    severity: AuditSeverity
    organization_id: Id
    actor: AuditActor
    resource: AuditResource
    action: Code
    outcome: AuditOutcome
    metadata: dict[str, Any] = Field(default_factory=dict)  # sessionId, consentRef, ...
    # The recording endpoint's device ID and that device's gapless counter (from 1). This agent's
    # audit trail sets both when it records the event; others' events may lack them.
    device_id: Id | None = None
    sequence: Annotated[int, Field(ge=1, le=MAX_AUDIT_SEQUENCE)] | None = None


# ---------------------------------------------------------------------------------------------
# Consent (App Context custom.consent_telehealth, a JSON string)

CONSENT_FIELD: Final = "consent_telehealth"
ConsentRefusal: TypeAlias = Literal["missing", "not granted", "expired"]


class Consent(WireModel):
    granted: bool
    expires_at: UtcTime | None = None


Message: TypeAlias = LifecycleAction | ChatMessage | ChatRead | Notification | Signal | Emergency | AuditEvent


# ---------------------------------------------------------------------------------------------
# Decoding


@dataclass(frozen=True)
class Drop:
    """Why a payload was not accepted: the field (camelCase, as on the wire) and the reason.

    Neither repeats any value from the payload.
    """

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


class ChannelKind(StrEnum):
    CONSULTATION = "consultation"
    VIDEO = "video"
    FILES = "files"
    WAITING_ROOM = "waiting-room"
    NOTIFICATION = "notification"
    EMERGENCY = "emergency"
    AUDIT = "audit"


@dataclass(frozen=True)
class ChannelInfo:
    kind: ChannelKind
    ids: tuple[str, ...]  # the IDs in the name: (providerId, patientId), (userId,), ...


def parse_channel(channel: object) -> ChannelInfo | None:
    """What kind of channel ``channel`` is, or None for anything that carries no messages here."""
    if not isinstance(channel, str) or len(channel) > 200 or channel.endswith(PRESENCE_SUFFIX):
        return None  # a presence channel carries presence events, never messages
    parts = channel.split(".")
    try:
        if parts[0] == "consultation" and len(parts) in (3, 4):
            ids = (validate_id(parts[1]), validate_id(parts[2]))
            if len(parts) == 3:
                return ChannelInfo(ChannelKind.CONSULTATION, ids)
            suffix = {"video": ChannelKind.VIDEO, "files": ChannelKind.FILES}.get(parts[3])
            return ChannelInfo(suffix, ids) if suffix else None
        single = {
            "waiting-room": ChannelKind.WAITING_ROOM,
            "notification": ChannelKind.NOTIFICATION,
            "emergency": ChannelKind.EMERGENCY,
            "audit": ChannelKind.AUDIT,
        }.get(parts[0])
        if single is not None and len(parts) == 2:
            return ChannelInfo(single, (validate_id(parts[1]),))
    except InvalidIdError:
        return None
    return None


_Lifecycle = Annotated[LifecycleAction, Field(discriminator="action")]
_WaitingRoom = Annotated[PatientCheckedIn | ConsultationCancelled, Field(discriminator="action")]
_Chat = Annotated[ChatMessage | ChatRead, Field(discriminator="type")]
_Notification = Annotated[Notification, Field(discriminator="type")]
_Signal = Annotated[Signal, Field(discriminator="type")]
_Emergency = Annotated[Emergency, Field(discriminator="action")]

# (discriminator key, adapter) per channel kind; the consultation channel has two families.
_ADAPTERS: Final[dict[ChannelKind, tuple[tuple[str, TypeAdapter[Any]], ...]]] = {
    ChannelKind.CONSULTATION: (("action", TypeAdapter(_Lifecycle)), ("type", TypeAdapter(_Chat))),
    ChannelKind.WAITING_ROOM: (("action", TypeAdapter(_WaitingRoom)),),
    ChannelKind.NOTIFICATION: (("type", TypeAdapter(_Notification)),),
    ChannelKind.VIDEO: (("type", TypeAdapter(_Signal)),),
    ChannelKind.EMERGENCY: (("action", TypeAdapter(_Emergency)),),
    ChannelKind.AUDIT: (("eventType", TypeAdapter(AuditEvent)),),
}


def _schema_names() -> tuple[frozenset[str], frozenset[str]]:
    """Every field alias of every model, and every discriminator value (for safe error paths)."""
    fields: set[str] = set()
    tags: set[str] = set()
    pending: list[type[BaseModel]] = list(WireModel.__subclasses__())
    seen: set[type[BaseModel]] = set()
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        pending.extend(model.__subclasses__())
        for name, info in model.model_fields.items():
            fields.add(info.alias or name)
            if name in ("action", "type") and isinstance(info.default, str):
                tags.add(info.default)
    return frozenset(fields), frozenset(tags)


_FIELD_NAMES, _TAG_VALUES = _schema_names()

# pydantic error types whose message (or our own text here) repeats no input value.
_SAFE_TEXT: Final[dict[str, str]] = {
    "missing": "is required",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "dict_type": "must be an object",
    "union_tag_invalid": "is not a known value",
    "union_tag_not_found": "is required",
    "literal_error": "is not one of the allowed values",
    "enum": "is not one of the allowed values",
}
_LIMIT_TEXT: Final[dict[str, tuple[str, str]]] = {
    "string_too_short": ("min_length", "must be at least {} characters"),
    "string_too_long": ("max_length", "must be at most {} characters"),
    "greater_than_equal": ("ge", "must be at least {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "greater_than": ("gt", "must be greater than {}"),
    "less_than": ("lt", "must be less than {}"),
}


def _safe_path(loc: tuple[int | str, ...]) -> str:
    """The error's location with schema names only: a key from the payload is never repeated."""
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in _FIELD_NAMES:
            parts.append(("." if parts else "") + item)
        elif item in _TAG_VALUES and not parts:
            continue  # the discriminated union's branch, not a field
        else:
            break  # a key of a free-form object (audit metadata): not ours to repeat
    return "".join(parts) or "payload"


def _drop_from(error: ValidationError, discriminator: str) -> Drop:
    first = error.errors(include_url=False, include_input=False)[0]
    kind = first["type"]
    path = _safe_path(tuple(first["loc"]))
    ctx = first.get("ctx") or {}
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        path = discriminator
    if kind.startswith("th_"):
        text = first["msg"]  # our own templates, which never include the input
    elif kind == "literal_error" and "expected" in ctx:
        text = f"must be one of {ctx['expected']}"  # the schema's values, not the input's
    elif kind in _SAFE_TEXT:
        text = _SAFE_TEXT[kind]
    elif kind in _LIMIT_TEXT and _LIMIT_TEXT[kind][0] in ctx:
        key, template = _LIMIT_TEXT[kind]
        text = template.format(ctx[key])
    else:
        text = f"is invalid ({kind})"
    return Drop(path, text)


# The field that names the sender, per model: it must equal the publisher.
_IDENTITY_FIELDS: Final[dict[type[WireModel], tuple[str, str]]] = {
    PatientCheckedIn: ("patient_id", "patientId"),
    ProviderJoined: ("provider_id", "providerId"),
    ConsultationStarted: ("provider_id", "providerId"),
    WrapUpStarted: ("provider_id", "providerId"),
    ConsultationEnded: ("provider_id", "providerId"),
    ProviderInvited: ("invited_by", "invitedBy"),
    ProviderRemoved: ("removed_by", "removedBy"),
    ConsultationCancelled: ("cancelled_by", "cancelledBy"),
    ChatMessage: ("sender_id", "senderId"),
    ChatRead: ("reader_id", "readerId"),
    Offer: ("sender_id", "senderId"),
    Answer: ("sender_id", "senderId"),
    IceCandidateMessage: ("sender_id", "senderId"),
    EndCall: ("sender_id", "senderId"),
    EmergencyEscalation: ("escalated_by", "escalatedBy"),
    EmergencyResolved: ("resolved_by", "resolvedBy"),
}


def claimed_sender(message: Message) -> tuple[str, str] | None:
    """``(wire field, user ID)`` of the message's own sender field, or None if it has none."""
    if isinstance(message, AuditEvent):
        return "actor.userId", message.actor.user_id
    spec = _IDENTITY_FIELDS.get(type(message))
    if spec is None:
        return None
    attribute, wire = spec
    value: str = getattr(message, attribute)
    return wire, value


def check_sender(message: Message, publisher: str | None) -> Drop | None:
    """A Drop if the message names a sender other than its publisher (a forged identity)."""
    claimed = claimed_sender(message)
    if claimed is None:
        return None
    wire, value = claimed
    if publisher is None:
        return Drop("publisher", f"is unknown, so {wire} cannot be checked")
    if value != publisher:
        return Drop(wire, "must equal the publisher")
    return None


def _check_channel(info: ChannelInfo, message: Message) -> Drop | None:
    """Fields that must agree with the channel the message came on."""
    if isinstance(message, PatientCheckedIn) and info.kind is ChannelKind.WAITING_ROOM:
        expected = f"consultation.{info.ids[0]}.{message.patient_id}"
        if message.consultation_id != expected:
            return Drop("consultationId", "must be this waiting room's consultation of patientId")
    return None


def _validate(info: ChannelInfo, payload: Mapping[Any, Any]) -> Message | Drop:
    families = _ADAPTERS.get(info.kind)
    if families is None:
        return Drop("channel", "carries no modelled messages")
    for discriminator, adapter in families:
        if discriminator in payload:
            try:
                message: Message = adapter.validate_python(payload)
            except ValidationError as exc:
                return _drop_from(exc, discriminator)
            return message
    names = " or ".join(repr(d) for d, _ in families)
    return Drop(families[0][0], f"is required ({names})")


def decode(channel: object, payload: object, publisher: object) -> Message | Drop:
    """The message ``payload`` received on ``channel`` from ``publisher``, or why it is dropped.

    Never raises, whatever the input: anything unexpected becomes a Drop.
    """
    try:
        info = parse_channel(channel)
        if info is None:
            return Drop("channel", "is not a channel that carries messages")
        if not isinstance(payload, Mapping):
            return Drop("payload", "must be a JSON object")
        if publisher is not None and not isinstance(publisher, str):
            return Drop("publisher", "must be a string")
        result = _validate(info, payload)
        if isinstance(result, Drop):
            return result
        if info.kind is ChannelKind.CONSULTATION and isinstance(result, PatientCheckedIn):
            return Drop("action", "is not allowed on this channel")  # waiting room only
        return check_sender(result, publisher) or _check_channel(info, result) or result
    except (ValueError, TypeError, RecursionError):
        # Last resort: validation itself failed on a pathological payload.
        return Drop("payload", "could not be validated")


def encode(message: WireModel) -> dict[str, Any]:
    """The wire dict: camelCase keys, times as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    return message.model_dump(mode="json", by_alias=True)


# ---------------------------------------------------------------------------------------------
# Consent and emergency push helpers


def decode_consent(raw: object) -> Consent | Drop:
    """``custom.consent_telehealth`` (a JSON string) as a Consent, or why it is unusable."""
    if raw is None:
        return Drop(CONSENT_FIELD, "is missing")
    if not isinstance(raw, str):
        return Drop(CONSENT_FIELD, "must be a JSON string")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        return Drop(CONSENT_FIELD, "is not valid JSON")
    if not isinstance(data, dict):
        return Drop(CONSENT_FIELD, "must be a JSON object")
    try:
        return Consent.model_validate(data)
    except ValidationError as exc:
        drop = _drop_from(exc, "granted")
        return Drop(f"{CONSENT_FIELD}.{drop.field}", drop.reason)


def consent_refusal(consent: Consent | None, now: datetime) -> ConsentRefusal | None:
    """Why check-in must be refused (``missing``, ``not granted``, ``expired``), or None."""
    if consent is None:
        return "missing"
    if not consent.granted:
        return "not granted"
    if consent.expires_at is not None and consent.expires_at <= now:
        return "expired"
    return None


def encode_consent(consent: Consent) -> str:
    return json.dumps(encode(consent), separators=(",", ":"))


def emergency_push_meta(severity: EmergencySeverity, escalation_id: str) -> dict[str, Any]:
    """Push payloads for an emergency notification's publish ``meta``.

    ``meta`` is not encrypted (PubNub, the push services and lock screens see it), so it carries
    the severity and the escalation ID only; the reason stays in the encrypted body.
    """
    if severity not in get_args(EmergencySeverity):
        raise ValueError("severity: must be urgent, critical or life-threatening")
    if not isinstance(escalation_id, str) or not _UUID.fullmatch(escalation_id):
        raise ValueError("escalationId: must be a version-4 UUID")
    text = f"{severity.upper()} escalation {escalation_id.lower()}"
    return {
        "pn_apns": {"aps": {"alert": {"title": "EMERGENCY", "body": text}, "sound": "emergency.aiff"}},
        "pn_gcm": {"notification": {"title": "EMERGENCY", "body": text, "priority": "high"}},
    }
