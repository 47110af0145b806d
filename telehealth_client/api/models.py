"""The API's bodies as pydantic models: requests are validated by them (unknown fields refused,
each failing field named in the 422), answers are written by them, and the OpenAPI document's
schemas are generated from them. JSON names are camelCase, like the wire protocol's.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from devices.report import DeviceReport
from telehealth_client.emergency.desk import MAX_TEXT_CHARS  # what the desk enforces, so documented
from telehealth_client.protocol.messages import EmergencySeverity, Id, InvitedRole

# Far more than a chat message (PubNub's 32 KiB publish bounds it anyway): a bigger body is refused
# (413) before it is read whole.
MAX_BODY_BYTES = 64 * 1024


class ApiModel(BaseModel):
    """An answer (built by name in the code, written in camelCase)."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="forbid",
        frozen=True,
        # Each model's validator is built when it is first used, not at import: the agent starts
        # (READY within a second) without the many it does not use idle.
        defer_build=True,
    )


class RequestModel(ApiModel):
    """A request body: camelCase names only, unknown fields refused."""

    model_config = ConfigDict(validate_by_name=False)


# -- requests -------------------------------------------------------------------------------------


class CheckInRequest(RequestModel):
    """Check the patient in (kiosk): the appointment, the patient, the provider and the department."""

    appointment_id: Id
    patient_id: Id
    provider_id: Id
    department_id: Id


class ConsentReadRequest(RequestModel):
    """Whose consent, for a check-in with which provider (and appointment). In the body, not the
    URL: a patient ID is PHI and stays out of addresses and their logs."""

    patient_id: Id
    provider_id: Id
    appointment_id: Id | None = None


class EndRequest(RequestModel):
    follow_up_required: bool = Field(strict=True)


class InviteRequest(RequestModel):
    provider_id: Id
    role: InvitedRole


class RemoveRequest(RequestModel):
    provider_id: Id


class QueueUpdatesRequest(RequestModel):
    minutes_per_patient: Annotated[int, Field(ge=1, le=240, strict=True)] = 10


class ChatSendRequest(RequestModel):
    text: Annotated[str, Field(min_length=1, max_length=MAX_BODY_BYTES)]


class ChatReadRequest(RequestModel):
    """Mark the chat read up to ``upToId`` (default: the newest message)."""

    up_to_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class MuteRequest(RequestModel):
    """Mute (true) or unmute (false) this end's microphone (``audio``) or camera (``video``); a field
    left out stays as it is, and at least one is given."""

    audio: bool | None = Field(default=None, strict=True)
    video: bool | None = Field(default=None, strict=True)

    @model_validator(mode="after")
    def _names_one(self) -> MuteRequest:
        if self.audio is None and self.video is None:
            raise ValueError("give audio or video (true mutes, false unmutes)")
        return self


class EscalateRequest(RequestModel):
    consultation_id: Annotated[str, Field(min_length=1, max_length=200)]
    severity: EmergencySeverity
    reason: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


class ResolveRequest(RequestModel):
    resolution: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


DeviceName = Literal["camera", "microphone", "speaker"]


class DeviceCheckRequest(RequestModel):
    """Check the settings' camera, microphone and speaker; ``skip`` leaves some out (not all)."""

    skip: Annotated[list[DeviceName], Field(max_length=2)] = []


class PreflightRequest(RequestModel):
    """The settings' devices, then the network; ``skip`` leaves devices out (``devices``: all)."""

    skip: Annotated[list[Literal["camera", "microphone", "speaker", "devices"]], Field(max_length=4)] = []


# -- answers --------------------------------------------------------------------------------------


class FieldProblem(ApiModel):
    field: str
    reason: str


class ErrorAnswer(ApiModel):
    """Every refusal: ``error`` a code, ``message`` for people, ``fields`` the failing fields (422);
    a 409 adds ``state`` (the consultation's, or ``idle``), a wrong-role 404 ``role``."""

    error: str
    message: str
    fields: list[FieldProblem] = []
    state: str | None = None
    role: str | None = None


class HealthAnswer(ApiModel):
    """``ok`` false (503) names the reason: the pub/sub connection is not up while it should be."""

    ok: bool
    pubsub: str
    reason: str | None = None


class ReadyAnswer(ApiModel):
    ready: bool
    role: str
    reason: str | None = None


class RosterMember(ApiModel):
    user_id: str
    role: str
    status: str
    present: bool


class MuteState(ApiModel):
    """What this end sends as silence (``audio``) or black frames (``video``)."""

    audio: bool = False
    video: bool = False


class CallView(ApiModel):
    phase: str
    status: str
    media: list[str] = []
    muted: MuteState = MuteState()


class MuteAnswer(ApiModel):
    consultation_id: str
    muted: MuteState


class ConsultationView(ApiModel):
    consultation_id: str
    state: str
    provider_id: str
    patient_id: str
    roster: list[RosterMember]
    queue_position: int | None = None
    estimated_wait_minutes: int | None = None
    call: CallView | None = None


class DeviceVerdicts(ApiModel):
    """The newest device check's (or preflight's) verdicts: ok, warn, fail or skipped."""

    check_id: str
    state: str
    camera: str
    microphone: str
    speaker: str
    network: str | None = None


class StatusAnswer(ApiModel):
    role: str
    user_id: str
    status: str
    pubsub: str
    consultations: list[ConsultationView]
    outbox_backlog: int | None = None
    token_expiring_at: datetime | None = None
    events_last_id: int | None = None
    devices: DeviceVerdicts | None = None


class CheckInAnswer(ApiModel):
    consultation: ConsultationView


class WaitingPatientView(ApiModel):
    consultation_id: str
    patient_id: str
    appointment_id: str | None
    state: str
    present: bool


class WaitingRoomAnswer(ApiModel):
    waiting: list[WaitingPatientView]


class QueueUpdatesAnswer(ApiModel):
    sent: int


class SummaryView(ApiModel):
    duration: int
    follow_up_required: bool


class EndAnswer(ApiModel):
    consultation: ConsultationView
    summary: SummaryView


class RemoveAnswer(ApiModel):
    revoked: int


class ChatEntryView(ApiModel):
    id: str
    sender_id: str
    sender_role: str
    text: str
    sent_at: datetime
    timetoken: int | None
    status: str
    own: bool
    read_by: list[str]
    failure: str | None = None


class ChatAnswer(ApiModel):
    consultation_id: str
    messages: list[ChatEntryView]


class ChatSentAnswer(ApiModel):
    message: ChatEntryView


class ChatReadAnswer(ApiModel):
    """``receiptId`` None: nothing newer to acknowledge."""

    receipt_id: str | None


class EscalationView(ApiModel):
    id: str
    consultation_id: str
    department_id: str
    escalated_by: str
    severity: str
    reason: str
    timestamp: datetime
    status: Literal["active", "resolved"]
    delivered: bool
    notified: int | None
    resolved_by: str | None = None
    resolution: str | None = None
    own: bool


class EscalationsAnswer(ApiModel):
    escalations: list[EscalationView]


class EscalationAnswer(ApiModel):
    escalation: EscalationView


class DeviceStepView(ApiModel):
    """One device's verdict, as soon as it is known: the device as checked (names only, no
    credentials), ``status`` ok, warn or fail, and the reasons."""

    kind: str
    device: str | None
    status: str
    reasons: list[str]


class DeviceCheckView(ApiModel):
    """A device check or preflight: ``state`` running, done or failed (``error`` a code: it could
    not run). ``steps``: each device's verdict so far; ``report``: the device check's report (every
    measurement and verdict; the snapshot is its own route); ``network``: a preflight's network
    report; ``passed``: a preflight's verdict (video possible and no device failed)."""

    id: str
    kind: Literal["devices", "preflight"]
    state: Literal["running", "done", "failed"]
    skip: list[str]
    started_at: datetime
    finished_at: datetime | None = None
    steps: list[DeviceStepView]
    snapshot: bool = False
    report: DeviceReport | None = None
    network: dict[str, Any] | None = None
    passed: bool | None = None
    error: str | None = None


class DeviceCheckAnswer(ApiModel):
    check: DeviceCheckView


class ConsentAnswer(ApiModel):
    """The clinic's word on the patient's telehealth consent for a check-in with ``providerId``:
    ``granted`` (unexpired), else ``refusal`` (``missing``, ``not granted``, ``expired``), as the
    clinic's token server and the consent record (App Context) say; ``expiresAt`` the record's."""

    patient_id: str
    provider_id: str
    granted: bool
    refusal: str | None = None
    expires_at: datetime | None = None


class Accepted(ApiModel):
    consultation: ConsultationView


def dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True)
