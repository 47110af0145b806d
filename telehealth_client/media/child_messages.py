"""The messages between the agent and a media child (media/worker.py), one JSON object per line.

Requests (agent to child) carry an ``id`` and an ``op``; each is a model here, and the child
answers ``Reply`` (``ok``, or ``code`` and ``reason``, plus the op's own fields). Events (child to
agent) carry an ``event`` and no ``id``. Both sides validate what they read against these models:
a request that is not one is answered with the field and the reason (``code`` ``request``), an
event that is not one is dropped with a warning. TURN credentials travel in ``Start``, never in
argv or the environment, and so does the way to TURN (``Route``: the HTTPS proxy, the CA bundle).

Public API: the request models (``Start``, ``Prepare``, ``MakeOffer``, ``MakeAnswer``,
``AcceptAnswer``, ``AddCandidate``, ``Reset``, ``GetStats``, ``GetPreview``, ``WatchPreviews``,
``SetVideoMode``, ``SetMute`` with ``Mute``, ``RunEchoTest``, ``Close``) and ``Request``,
``parse_request(line)``; ``Reply``; the
event models (``Ready``, ``Heartbeat``, ``FirstFrame``, ``Resumed``, ``Stalled``, ``Quality``,
``DeviceFailed``, ``VideoModeDecided``, ``PreviewImage``) and ``ChildEvent``, ``parse_event(data)``;
``RequestError``; ``PreviewSide``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from telehealth_client.media.common import TurnConfig
from telehealth_client.media.fallback import FallbackSettings, VideoMode
from telehealth_client.outbound import Outbound, Proxy
from telehealth_client.protocol.messages import IceCandidate

MediaKind: TypeAlias = Literal["audio", "video"]
PreviewSide: TypeAlias = Literal["local", "remote"]
# A preview is for a person watching (the technician page), not a second call: a few small JPEGs a
# second at most, so that encoding them never takes from the call's own 30 fps.
MAX_PREVIEW_FPS = 15.0
MAX_PREVIEW_WIDTH = 1280


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- requests ---------------------------------------------------------------------------------------


class _Request(_Message):
    id: int = 0  # given by the agent's handle as it sends


class DeviceChoice(_Message):
    """What the child opens (media/worker.py ``Devices``, on the wire)."""

    camera: str | None = None
    camera_is_file: bool = False
    microphone: str | None = None
    speaker: str | None = None
    relay_only: bool = True


class Route(_Message):
    """``Outbound`` on the wire: the HTTPS proxy (its credentials a secret, like TURN's: they
    travel here, never in argv or the environment) and the CA bundle's path."""

    proxy_host: str | None = None
    proxy_port: int | None = Field(default=None, ge=1, le=65535)
    proxy_authorization: str | None = None
    no_proxy: tuple[str, ...] = ()
    ca_bundle: str | None = None

    @classmethod
    def of(cls, outbound: Outbound) -> Route:
        proxy = outbound.proxy
        return cls(
            proxy_host=proxy.host if proxy is not None else None,
            proxy_port=proxy.port if proxy is not None else None,
            proxy_authorization=proxy.authorization if proxy is not None else None,
            no_proxy=outbound.no_proxy,
            ca_bundle=str(outbound.ca_bundle) if outbound.ca_bundle is not None else None,
        )

    def outbound(self) -> Outbound:
        proxy = None
        if self.proxy_host is not None and self.proxy_port is not None:
            proxy = Proxy(self.proxy_host, self.proxy_port, self.proxy_authorization)
        bundle = Path(self.ca_bundle) if self.ca_bundle is not None else None
        return Outbound(proxy, self.no_proxy, bundle)


class TurnServers(_Message):
    urls: tuple[str, ...] = Field(min_length=1)
    username: str
    credential: str
    route: Route = Route()

    @classmethod
    def of(cls, turn: TurnConfig) -> TurnServers:
        return cls(
            urls=tuple(turn.urls),
            username=turn.username,
            credential=turn.credential,
            route=Route.of(turn.outbound),
        )

    def config(self) -> TurnConfig:
        return TurnConfig(self.urls, self.username, self.credential, self.route.outbound())


class Fallback(_Message):
    """``FallbackSettings`` on the wire (checked again as such when the child builds it)."""

    poor_level: int
    good_level: int
    poor_samples: int
    good_samples: int

    @classmethod
    def of(cls, settings: FallbackSettings) -> Fallback:
        return cls(**dataclasses.asdict(settings))

    def settings(self) -> FallbackSettings:
        return FallbackSettings(**self.model_dump())


class Mute(_Message):
    """What the call's user muted: ``audio`` sends silence, ``video`` black frames (the far end
    keeps receiving a well-formed stream, so nothing there stalls)."""

    audio: bool = False
    video: bool = False


UNMUTED = Mute()


class Start(_Request):
    """Keep what the next connection uses; with ``fallback`` (the patient side) the call goes audio
    only by itself when video cannot be sustained. ``mute``: a child started for a call already
    muted (a replacement, a rebuild) starts muted."""

    op: Literal["start"] = "start"
    turn: TurnServers
    devices: DeviceChoice
    video_mode: VideoMode = "video"
    fallback: Fallback | None = None
    mute: Mute = UNMUTED


class Prepare(_Request):
    """Open the devices and check TURN now, for the offer or answer to come."""

    op: Literal["prepare"] = "prepare"


class MakeOffer(_Request):
    op: Literal["offer"] = "offer"


class MakeAnswer(_Request):
    op: Literal["answer"] = "answer"
    sdp: str


class AcceptAnswer(_Request):
    op: Literal["accept-answer"] = "accept-answer"
    sdp: str


class AddCandidate(_Request):
    op: Literal["candidate"] = "candidate"
    candidate: IceCandidate


class Reset(_Request):
    """Drop the connection and close the devices: idle again, ready for ``Start``."""

    op: Literal["reset"] = "reset"


class GetStats(_Request):
    op: Literal["stats"] = "stats"


class GetPreview(_Request):
    op: Literal["preview"] = "preview"


class WatchPreviews(_Request):
    """Encode the newest frame of each of ``sides`` as JPEG ``per_second`` times a second (``width``
    pixels wide) and send each as a ``PreviewImage`` event, until told otherwise; no side: stop.
    Nothing is encoded while nobody watches."""

    op: Literal["watch-previews"] = "watch-previews"
    sides: tuple[PreviewSide, ...] = ()
    per_second: float = Field(default=8.0, gt=0, le=MAX_PREVIEW_FPS)
    width: int = Field(default=320, ge=16, le=MAX_PREVIEW_WIDTH)


class SetVideoMode(_Request):
    op: Literal["video-mode"] = "video-mode"
    mode: VideoMode


class SetMute(_Request):
    """Mute or unmute our microphone and camera, now and for the connections to come."""

    op: Literal["mute"] = "mute"
    mute: Mute


class RunEchoTest(_Request):
    """The preflight's media test (media/echo_test.py): TURN allocated, then two connections of
    this child call each other through it for ``seconds``; answered with its ``outcome``."""

    op: Literal["echo-test"] = "echo-test"
    turn: TurnServers
    relay_only: bool = True
    seconds: float = Field(gt=0, le=60)
    connect_within: float = Field(gt=0, le=120)


class Close(_Request):
    """Close the connection and the devices, answer, and exit."""

    op: Literal["close"] = "close"


Request: TypeAlias = Annotated[
    Start
    | Prepare
    | MakeOffer
    | MakeAnswer
    | AcceptAnswer
    | AddCandidate
    | Reset
    | GetStats
    | GetPreview
    | WatchPreviews
    | SetVideoMode
    | SetMute
    | RunEchoTest
    | Close,
    Field(discriminator="op"),
]
_REQUESTS: TypeAdapter[Request] = TypeAdapter(Request)


class RequestError(Exception):
    """A line that is no valid request: ``request_id`` if it had one, the field and the reason."""

    def __init__(self, request_id: int | None, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.request_id = request_id
        self.field = field
        self.reason = reason


def parse_request(data: Any) -> Request:
    """The request in ``data`` (a decoded JSON line); RequestError naming the field if it is none."""
    request_id = data.get("id") if isinstance(data, dict) else None
    try:
        return _REQUESTS.validate_python(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            field = "op"  # no request of that name, or none named
        else:
            field = ".".join(str(part) for part in error["loc"]) or "request"
        raise RequestError(
            request_id if isinstance(request_id, int) and not isinstance(request_id, bool) else None,
            field,
            error["msg"],
        ) from None


class Reply(BaseModel):
    """The child's answer to request ``id``: ``ok``, or ``code`` and ``reason``; the op's own
    fields (``sdp``, the stats, the previews) beside them."""

    model_config = ConfigDict(extra="allow", frozen=True)

    id: int
    ok: bool
    code: str | None = None
    reason: str | None = None

    def field(self, name: str) -> Any:
        return (self.model_extra or {}).get(name)


# -- events -----------------------------------------------------------------------------------------


class Ready(_Message):
    """aiortc, OpenCV and PortAudio are loaded and a throwaway connection made: a warm child."""

    event: Literal["ready"] = "ready"
    pid: int


class Heartbeat(_Message):
    """Every second while the child's loop runs; its resident memory when known."""

    event: Literal["heartbeat"] = "heartbeat"
    rss_kb: int | None = Field(default=None, ge=0)


class FirstFrame(_Message):
    event: Literal["first-frame"] = "first-frame"
    kind: MediaKind


class Resumed(_Message):
    """The first frame of ``kind`` after a stall."""

    event: Literal["resumed"] = "resumed"
    kind: MediaKind


class Stalled(_Message):
    """Media that flowed stopped for 2 s (media/call.py ``STALL_SECONDS``)."""

    event: Literal["stall"] = "stall"


class Quality(_Message):
    """The call's ``QualitySample`` (media/quality.py), told when it changes shape."""

    event: Literal["quality"] = "quality"
    level: int = Field(ge=0, le=5)
    rtt_ms: float | None
    jitter_ms: float | None
    loss_pct: float
    sent_loss_pct: float | None
    fps: float
    width: int | None
    height: int | None
    inbound_kbps: float
    outbound_kbps: float
    video_kbps_ceiling: int | None


class DeviceFailed(_Message):
    """A device failed mid-call (``kind``: ``video``, ``audio`` or ``speaker``); the call goes on."""

    event: Literal["device-failed"] = "device-failed"
    kind: str
    reason: str


class VideoModeDecided(_Message):
    """The child's fallback decided the call goes on in ``mode`` (media/fallback.py)."""

    event: Literal["video-mode"] = "video-mode"
    mode: VideoMode


class PreviewImage(_Message):
    """A watched side's newest frame as JPEG (base64), while ``WatchPreviews`` asks for it; ``seq``
    grows by one per image of that side."""

    event: Literal["preview"] = "preview"
    side: PreviewSide
    seq: int = Field(ge=1)
    jpeg: str = Field(min_length=1)


ChildEvent: TypeAlias = Annotated[
    Ready
    | Heartbeat
    | FirstFrame
    | Resumed
    | Stalled
    | Quality
    | DeviceFailed
    | VideoModeDecided
    | PreviewImage,
    Field(discriminator="event"),
]
_EVENTS: TypeAdapter[ChildEvent] = TypeAdapter(ChildEvent)


def parse_event(data: Any) -> ChildEvent:
    """The event in ``data``; pydantic's ValidationError if it is none."""
    return _EVENTS.validate_python(data)
