"""The call's video previews as MJPEG streams: ``GET /v1/previews/local`` (this end's camera) and
``GET /v1/previews/remote`` (the far end's video), and ``GET /v1/previews`` (who watches what now).

A preview answers ``multipart/x-mixed-replace`` of JPEG parts, a few a second, for as long as the
client reads and the call lasts (across its rebuilds: the stream follows the connection that carries
the call). The media child encodes them, and only while someone watches (media/previews.py): the
agent's event loop only passes bytes on. Without a call to show: 409 ``no-call``. A cart shows the
calls started through its API (``?consultationId=`` picks one; the first live one otherwise).

Watching is access to the pictures of a consultation: each stream is recorded in the audit trail
before its first image (``PHI_FILE_ACCESSED``, resource ``video-preview``, the API's user as the
actor; a trail that cannot record it refuses the stream, 503), and ``PreviewWatched`` (IDs only)
goes on the hub as a stream starts and ends, so the technician page shows that a preview is watched.

Public API: ``ROUTES``; ``PreviewWatchers`` (``PREVIEWS_KEY`` in the application).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Literal

from aiohttp import web

from telehealth_client.api.audited import audit_or_503
from telehealth_client.api.errors import ApiError
from telehealth_client.api.models import ApiModel
from telehealth_client.api.routing import Call, Route, current_state
from telehealth_client.events import EventSink, PreviewWatched
from telehealth_client.logs import describe_exception

log = logging.getLogger(__name__)

Side = Literal["local", "remote"]
BOUNDARY = "preview"
MEDIA_TYPE = f"multipart/x-mixed-replace; boundary={BOUNDARY}"
# A stream with no new image this long looks at the call again (ended? rebuilt in a new child?) and
# at whether the API is stopping.
RECHECK_SECONDS = 0.5
LIVE_PHASES = frozenset({"offering", "answering", "connected"})


class PreviewWatch(ApiModel):
    consultation_id: str
    preview: Side
    watchers: int


class PreviewsAnswer(ApiModel):
    """The calls whose previews can be watched now, and the previews being watched."""

    available: list[str]
    watched: list[PreviewWatch]


class PreviewWatchers:
    """How many stream each preview now; tells the hub as a stream starts and ends."""

    def __init__(self, hub: EventSink) -> None:
        self._hub = hub
        self._counts: dict[tuple[str, Side], int] = {}

    def started(self, consultation_id: str, side: Side) -> None:
        key = (consultation_id, side)
        self._counts[key] = self._counts.get(key, 0) + 1
        self._hub.emit(PreviewWatched(consultation_id, side, True, self._counts[key]))

    def stopped(self, consultation_id: str, side: Side) -> None:
        key = (consultation_id, side)
        left = max(0, self._counts.get(key, 0) - 1)
        if left:
            self._counts[key] = left
        else:
            self._counts.pop(key, None)
        self._hub.emit(PreviewWatched(consultation_id, side, False, left))

    def watched(self) -> list[PreviewWatch]:
        return [
            PreviewWatch(consultation_id=cid, preview=side, watchers=count)
            for (cid, side), count in sorted(self._counts.items())
        ]


PREVIEWS_KEY = web.AppKey("previews", PreviewWatchers)


def _calls(call: Call) -> list[tuple[str, Any]]:
    """(consultation ID, its ``ConsultationCall``) of each call this agent could show."""
    agent = call.agent
    if agent.patient is not None:
        session, media = agent.patient.session, agent.patient.call
        if session is None or media is None:
            return []
        return [(session.consultation.consultation_id, media)]
    if agent.provider is not None:
        held = agent.provider.sessions
        return [
            (cid, media)
            for cid, media in sorted(call.state.calls.items())
            if cid in held and not held[cid].closed
        ]
    return []


def _live(media: Any) -> bool:
    return str(media.phase) in LIVE_PHASES


def _live_calls(call: Call) -> list[tuple[str, Any]]:
    return [(cid, media) for cid, media in _calls(call) if _live(media)]


def _still_shown(call: Call, consultation_id: str, media: Any) -> bool:
    return any(cid == consultation_id and m is media for cid, m in _live_calls(call))


def _choose(call: Call) -> tuple[str, Any]:
    wanted = call.request.query.get("consultationId")
    for cid, media in _live_calls(call):
        if wanted is None or wanted == cid:
            return cid, media
    which = "that consultation has" if wanted is not None else "this agent has"
    raise ApiError(409, "no-call", f"no preview: {which} no call now", state=_state(call))


def _state(call: Call) -> str:
    return current_state(call.agent, call.request.query.get("consultationId"))


async def _audit(call: Call, consultation_id: str, side: Side) -> None:
    durable = call.agent.durable
    if durable is None:
        return  # an agent without a state directory keeps no trail (tests of parts only)
    await audit_or_503(call, "preview", lambda auditor: auditor.preview_watched(consultation_id, side))


def _watching(call: Call) -> bool:
    """The API is not stopping and the client is still there."""
    transport = call.request.transport
    return not call.state.closing and transport is not None and not transport.is_closing()


def _part(jpeg: bytes) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    return head.encode() + jpeg + b"\r\n"


async def _send_images(
    call: Call, response: web.StreamResponse, consultation_id: str, media: Any, side: Side
) -> None:
    """Each new image of ``side`` while the client reads and the call lasts, from whichever child
    carries the call (it follows a rebuild); the child is asked to encode only while watched."""
    worker: Any = None
    seq = 0
    try:
        while _watching(call) and _still_shown(call, consultation_id, media):
            current = media.worker
            if current is not worker:
                if worker is not None:
                    await worker.unwatch_preview(side)
                worker, seq = current, 0
                if worker is not None:
                    try:
                        await worker.watch_preview(side)
                    except Exception as exc:  # the child went away meanwhile: the call goes on in another
                        log.warning("preview not started side=%s error=%s", side, describe_exception(exc))
            if worker is None:
                await asyncio.sleep(RECHECK_SECONDS)  # between two connections of a rebuild
                continue
            image = await worker.previews.next_after(side, seq, RECHECK_SECONDS)
            if image is None:
                continue
            seq, jpeg = image
            await response.write(_part(jpeg))
    finally:
        if worker is not None:
            # Shielded: a stream cancelled as the API stops still tells the child to stop encoding.
            with contextlib.suppress(Exception):
                await asyncio.shield(worker.unwatch_preview(side))


async def _stream(call: Call, side: Side) -> web.StreamResponse:
    with call.state.preview_streams.held():
        return await _watched_stream(call, side)


async def _watched_stream(call: Call, side: Side) -> web.StreamResponse:
    consultation_id, media = _choose(call)
    await _audit(call, consultation_id, side)
    watchers: PreviewWatchers = call.request.app[PREVIEWS_KEY]
    response = web.StreamResponse(
        headers={"Content-Type": MEDIA_TYPE, "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    watchers.started(consultation_id, side)
    try:
        await response.prepare(call.request)
        with contextlib.suppress(ConnectionResetError):  # the client went away: nothing more to send
            await _send_images(call, response, consultation_id, media, side)
    finally:
        watchers.stopped(consultation_id, side)
    return response


async def local_preview(call: Call) -> web.StreamResponse:
    return await _stream(call, "local")


async def remote_preview(call: Call) -> web.StreamResponse:
    return await _stream(call, "remote")


async def previews(call: Call) -> PreviewsAnswer:
    watchers: PreviewWatchers = call.request.app[PREVIEWS_KEY]
    return PreviewsAnswer(available=[cid for cid, _ in _live_calls(call)], watched=watchers.watched())


_STREAM_NOTE = (
    "as MJPEG (multipart/x-mixed-replace of JPEG parts, a few a second) while the call lasts; "
    "?consultationId= picks a cart's call. Watching is audited (PHI_FILE_ACCESSED)"
)

ROUTES = [
    Route(
        "GET", "/v1/previews", previews, "The calls whose previews can be watched, and who watches",
        "previews", answer=PreviewsAnswer,
    ),
    Route(
        "GET", "/v1/previews/local", local_preview, f"This end's camera {_STREAM_NOTE}", "previews",
        media_type=MEDIA_TYPE, conflicts=True, errors=(503,),
    ),
    Route(
        "GET", "/v1/previews/remote", remote_preview, f"The far end's video {_STREAM_NOTE}", "previews",
        media_type=MEDIA_TYPE, conflicts=True, errors=(503,),
    ),
]  # fmt: skip
