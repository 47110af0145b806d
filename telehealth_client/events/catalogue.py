"""The event catalogue: every state change, roster change, token warning, bus status and call event
the agent tells, as frozen dataclasses (``kind`` names each for the local API's live stream).

Events carry IDs, states and codes only: never PHI, tokens or message text. ``Event`` is their union.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal, TypeAlias

from telehealth_client.protocol.messages import (
    CheckVerdict,
    ConsultationState,
    NetworkVerdict,
    Summary,
)
from telehealth_client.pubsub.bus import ConnectionStatus


@dataclass(frozen=True)
class StateChanged:
    kind: ClassVar[str] = "state-changed"
    consultation_id: str
    previous: ConsultationState
    state: ConsultationState
    timetoken: int
    # Set on the way into completed / cancelled respectively.
    summary: Summary | None = None
    cancel_reason: str | None = None


@dataclass(frozen=True)
class RosterChange:
    """One member's change in a consultation's roster (``consultation.roster`` makes them): ``kind``
    added, invited, joined, removed or left; ``role`` patient, provider, specialist, second-opinion,
    observer or nurse (that module's string enums)."""

    user_id: str
    role: str
    kind: str


@dataclass(frozen=True)
class RosterChanged:
    kind: ClassVar[str] = "roster-changed"
    consultation_id: str
    changes: tuple[RosterChange, ...]


@dataclass(frozen=True)
class QueueUpdated:
    kind: ClassVar[str] = "queue-updated"
    consultation_id: str
    position: int
    estimated_wait_minutes: int


@dataclass(frozen=True)
class ProviderReady:
    """The consultation's provider told the patient it is about to begin (``PROVIDER_READY``)."""

    kind: ClassVar[str] = "provider-ready"
    consultation_id: str


@dataclass(frozen=True)
class DeviceStatusReported:
    kind: ClassVar[str] = "device-status"
    consultation_id: str
    camera: CheckVerdict
    microphone: CheckVerdict
    speaker: CheckVerdict
    network: NetworkVerdict


@dataclass(frozen=True)
class TokenExpiring:
    kind: ClassVar[str] = "token-expiring"
    expires_at: datetime


@dataclass(frozen=True)
class AccessDenied:
    kind: ClassVar[str] = "access-denied"
    operation: str  # what was refused, e.g. "publish" or "subscribe"; never the token


@dataclass(frozen=True)
class AccessRenewing:
    """The clinic cannot be reached to renew access: the consultation, its media and the queued
    chat go on; retried in ``retry_in_seconds`` and on. ``token_expired``: publishing waits (and
    queues) until a new token arrives. Ends with ``AccessRenewed`` or ``AccessDenied``."""

    kind: ClassVar[str] = "access-renewing"
    retry_in_seconds: float
    token_expired: bool


@dataclass(frozen=True)
class AccessRenewed:
    """A new token arrived after ``AccessRenewing``: what was queued goes out."""

    kind: ClassVar[str] = "access-renewed"


@dataclass(frozen=True)
class TokenRefreshed:
    """A fresh token replaced the one on the bus: on schedule, or after a 403 (``reason``
    ``scheduled`` or ``access-denied``); ``ttl_minutes`` is its life. Never the token itself."""

    kind: ClassVar[str] = "token-refreshed"
    ttl_minutes: int
    reason: str


@dataclass(frozen=True)
class BusStatusChanged:
    kind: ClassVar[str] = "bus-status"
    status: ConnectionStatus
    reason: str | None = None


@dataclass(frozen=True)
class EndpointIdle:
    """A patient endpoint's consultation is over (``reason``): it is idle under its own ID again."""

    kind: ClassVar[str] = "idle"
    user_id: str
    reason: str


@dataclass(frozen=True)
class SessionClosed:
    """This endpoint left a consultation: ``reason`` completed, cancelled, removed, access-denied..."""

    kind: ClassVar[str] = "session-closed"
    consultation_id: str
    reason: str


@dataclass(frozen=True)
class InvitationReceived:
    """A provider was invited to another provider's consultation (``CONSULTATION_INVITE``)."""

    kind: ClassVar[str] = "invitation"
    consultation_id: str
    invited_by: str
    role: str


@dataclass(frozen=True)
class StateSaved:
    """The consultation is on disk as of ``timetoken``: a restart resumes from here."""

    kind: ClassVar[str] = "state-saved"
    consultation_id: str
    state: ConsultationState
    timetoken: int


@dataclass(frozen=True)
class ChatMessageAdded:
    """A chat message appeared in the log (ours queued, or another's received); no text."""

    kind: ClassVar[str] = "chat-message"
    consultation_id: str
    message_id: str
    sender_id: str
    status: str  # pending, sent or failed


@dataclass(frozen=True)
class ChatStatusChanged:
    """One of our chat messages was sent (it has a timetoken) or failed (``reason``)."""

    kind: ClassVar[str] = "chat-status"
    consultation_id: str
    message_id: str
    status: str
    reason: str | None = None


@dataclass(frozen=True)
class ChatReadUpdated:
    """``reader_id`` has read every chat message up to ``up_to_id``."""

    kind: ClassVar[str] = "chat-read"
    consultation_id: str
    reader_id: str
    up_to_id: str


@dataclass(frozen=True)
class ChatWiped:
    """The consultation is over: its chat left memory and disk."""

    kind: ClassVar[str] = "chat-wiped"
    consultation_id: str


@dataclass(frozen=True)
class EmergencyUpdated:
    """An escalation raised, delivered, notified or resolved; IDs, severity and status only."""

    kind: ClassVar[str] = "emergency"
    escalation_id: str
    consultation_id: str
    severity: str
    status: str  # active or resolved
    delivered: bool  # on the emergency channel (False: queued, retried until PubNub takes it)
    notified: int | None  # on-call providers notified; None until the clinic said who is on call


@dataclass(frozen=True)
class EmergencyAlert:
    """This provider was notified of an escalation (``EMERGENCY_ESCALATION`` on its channel)."""

    kind: ClassVar[str] = "emergency-alert"
    escalation_id: str
    priority: str


@dataclass(frozen=True)
class CallStateChanged:
    """The call's negotiation moved: idle, offering, answering, connected, ended, or failed (our
    offers went unanswered: the call is over, the consultation goes on and a new call may start).
    A connection rebuilt during a call does not change it (``MediaFailed`` / ``MediaFlowing`` do)."""

    kind: ClassVar[str] = "call-state"
    consultation_id: str
    phase: str
    # Why the call ended (phase "ended"): hangup, remote-hangup, closed, or a failure such as
    # "TURN server unreachable" / "TURN credentials refused".
    reason: str | None = None


CallStatus: TypeAlias = Literal["idle", "connecting", "live", "audio-only", "recovering", "ended", "failed"]


@dataclass(frozen=True)
class CallStatusChanged:
    """The call's one status (media/call_status.py derives it from the events below and tells it
    only when it changed): idle, connecting, live, audio-only, recovering, ended or failed.
    ``media``: the far end's media arriving now; ``lost_devices``: devices that failed during the
    call (it goes on without them); ``reason``: why it ended or failed."""

    kind: ClassVar[str] = "call-status"
    consultation_id: str
    status: CallStatus
    media: tuple[str, ...] = ()
    lost_devices: tuple[str, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class MediaFlowing:
    """The other side's ``kind`` (audio or video) reached this endpoint: the call carries it."""

    kind: ClassVar[str] = "media-flowing"
    consultation_id: str
    media: str


@dataclass(frozen=True)
class MediaFailed:
    """Part of the call failed: ``source`` is ``media-process`` (rebuilt in a fresh child) or a
    device (``video``, ``audio``, ``speaker``: the call goes on without it)."""

    kind: ClassVar[str] = "media-failed"
    consultation_id: str
    source: str
    reason: str


@dataclass(frozen=True)
class OfferRefused:
    """An offer on the call's channel was not answered: its SDP cannot be used, or no connection
    could be built for it (``code``, ``reason``: never the SDP itself). A call under way goes on."""

    kind: ClassVar[str] = "offer-refused"
    consultation_id: str
    code: str
    reason: str


@dataclass(frozen=True)
class CallVideoModeChanged:
    """The call goes on with audio alone (``mode`` ``audio-only``: the path could not carry video)
    or with video again. ``source``: ``network`` (this end measured it: the patient side) or
    ``far-end`` (the patient's ``DEVICE_STATUS`` said so)."""

    kind: ClassVar[str] = "call-video-mode"
    consultation_id: str
    mode: str
    source: str


@dataclass(frozen=True)
class CallMuteChanged:
    """This end's microphone (``audio``) or camera (``video``) was muted or unmuted through the API:
    the far end receives silence or black frames while muted."""

    kind: ClassVar[str] = "call-mute"
    consultation_id: str
    audio: bool
    video: bool


@dataclass(frozen=True)
class MediaChildOverMemory:
    """A media child (``pid``) grew over the memory ceiling: it is not reused, and is replaced
    between connections (the call is not interrupted for it)."""

    kind: ClassVar[str] = "media-child-over-memory"
    consultation_id: str
    pid: int
    rss_mb: int
    ceiling_mb: int


@dataclass(frozen=True)
class CallQualityChanged:
    """The call's quality as this end measures it, told when its level, picture size or video
    bitrate ceiling changes (``media.quality``): 5 good, 1 poor, 0 nothing arriving."""

    kind: ClassVar[str] = "call-quality"
    consultation_id: str
    level: int
    rtt_ms: float | None
    jitter_ms: float | None
    loss_pct: float
    fps: float
    width: int | None
    height: int | None
    inbound_kbps: float
    outbound_kbps: float
    video_kbps_ceiling: int | None


@dataclass(frozen=True)
class ConsultationNotFollowed:
    """This endpoint cannot follow ``consultation_id`` (or not all of its channels): ``reason``
    says why (a limit reached, a subscription refused), in words that name no PHI."""

    kind: ClassVar[str] = "consultation-not-followed"
    consultation_id: str
    reason: str


@dataclass(frozen=True)
class GuestAccessRevoked:
    """A guest of one of this provider's consultations (an invited provider, an assigned nurse) lost
    its access to it: removed, or the consultation is over. ``tokens``: how many the clinic revoked."""

    kind: ClassVar[str] = "guest-access-revoked"
    consultation_id: str
    user_id: str
    tokens: int


# ``unknown``: the check ended without this device's verdict (it could not run).
DeviceVerdict: TypeAlias = Literal["ok", "warn", "fail", "skipped", "unknown"]


@dataclass(frozen=True)
class DeviceChecked:
    """One device's verdict in a device check the local API runs (``check_id``): ``device`` camera,
    microphone or speaker, ``status`` ok, warn or fail. Names and levels stay in the check's report."""

    kind: ClassVar[str] = "device-checked"
    check_id: str
    device: str
    status: DeviceVerdict


@dataclass(frozen=True)
class DeviceCheckFinished:
    """A device check or preflight the local API ran is over (``check``: ``devices`` or
    ``preflight``): each device's verdict (``skipped`` when left out), the network verdict of a
    preflight (``None`` for a device check), or ``error`` (a code) when it could not run.
    ``status``: the worst device verdict; ``fail`` too when a preflight did not pass."""

    kind: ClassVar[str] = "device-check-finished"
    check_id: str
    check: str
    status: DeviceVerdict
    camera: DeviceVerdict
    microphone: DeviceVerdict
    speaker: DeviceVerdict
    network: NetworkVerdict | None = None
    error: str | None = None


@dataclass(frozen=True)
class PreviewWatched:
    """Someone started (``watching``) or stopped watching a video ``preview`` (``local`` or
    ``remote``) of ``consultation_id``'s call through the local API; ``watchers``: how many watch
    that preview now."""

    kind: ClassVar[str] = "preview-watched"
    consultation_id: str
    preview: str
    watching: bool
    watchers: int


@dataclass(frozen=True)
class Missed:
    """This subscriber fell behind: ``count`` older events were dropped before the next one."""

    kind: ClassVar[str] = "missed"
    count: int


Event: TypeAlias = (
    StateChanged
    | RosterChanged
    | QueueUpdated
    | ProviderReady
    | DeviceStatusReported
    | TokenExpiring
    | AccessDenied
    | AccessRenewing
    | AccessRenewed
    | TokenRefreshed
    | BusStatusChanged
    | EndpointIdle
    | SessionClosed
    | InvitationReceived
    | StateSaved
    | ChatMessageAdded
    | ChatStatusChanged
    | ChatReadUpdated
    | ChatWiped
    | EmergencyUpdated
    | EmergencyAlert
    | CallStateChanged
    | CallStatusChanged
    | MediaFlowing
    | MediaFailed
    | OfferRefused
    | CallQualityChanged
    | CallVideoModeChanged
    | CallMuteChanged
    | MediaChildOverMemory
    | ConsultationNotFollowed
    | GuestAccessRevoked
    | PreviewWatched
    | DeviceChecked
    | DeviceCheckFinished
    | Missed
)
