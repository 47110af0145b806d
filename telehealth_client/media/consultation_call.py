"""A consultation's call: its signaling, its media child processes, and what the consultation learns.

``ConsultationCall`` puts together, for one ``ConsultationSession``: ``CallSignaling`` on the
``.video`` channel; media children (``MediaWorker``), one per connection of the call, with a spare
started warm as soon as the call is built, so that a connection never waits for aiortc's import;
TURN credentials from the clinic backend, fetched when the call is built and held while they are
fresh (``TurnCredentialCache``); and the consequences for the consultation. The patient
side answers by itself once the consultation is connecting (the provider calls). When the far
side's media (video, or audio alone from a kiosk without a camera) first arrives the provider's
side moves the consultation to in-progress (``CONSULTATION_STARTED``).

What each child reports goes to the signaling, whose negotiation decides: a stall (no frame for
2 s) or a child that died starts a new connection in the spare while the old one stays open (make
before break); a child that hangs is killed (then it died). A child whose connection never carried
media (its offer or answer failed, or it was superseded or given up) is idle again, or reset, and
serves the next connection instead of a fresh spawn. The consultation, chat and
audit go on untouched, and the failure is reported.

Public API: ``MediaOptions(devices, env=None)``; ``ConsultationCall(session, clinic, hub,
options=..., auditor=None, on_media_flowing=None)``; ``await start()``, ``await call()`` (to the
consultation's patient), ``await hangup()``, ``await prepared()``, ``phase``, ``worker``,
``await aclose()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from telehealth_client import events
from telehealth_client.consultation.auditing import Auditor
from telehealth_client.consultation.session import ConsultationSession
from telehealth_client.logs import describe_exception
from telehealth_client.media.common import CallError, TurnConfig
from telehealth_client.media.fallback import FallbackSettings, VideoMode
from telehealth_client.media.negotiation import Phase
from telehealth_client.media.signaling import CallSignaling, MediaBackend
from telehealth_client.media.turn_credentials import TurnCredentialCache, TurnGrant
from telehealth_client.media.worker import Devices, MediaWorker
from telehealth_client.protocol.messages import ConsultationState
from telehealth_client.security.clinic_client import ClinicClient

log = logging.getLogger(__name__)

ANSWERING_STATES = (
    ConsultationState.CONNECTING,
    ConsultationState.IN_PROGRESS,
    ConsultationState.WRAPPING_UP,
)
FlowingHandler = Callable[[str], Awaitable[None]]
VideoModeHandler = Callable[[VideoMode], Awaitable[None]]
HUNG = "the media process stopped answering"


@dataclass(frozen=True)
class MediaOptions:
    """The devices the media child opens, its environment (e.g. ``ALSA_CONFIG_PATH``), and when
    the patient side's call falls back to audio only."""

    devices: Devices
    env: Mapping[str, str] | None = None
    fallback: FallbackSettings = field(default_factory=FallbackSettings)  # when to go audio only


class ConsultationCall:
    def __init__(
        self,
        session: ConsultationSession,
        clinic: ClinicClient,
        hub: events.EventHub,
        *,
        options: MediaOptions,
        auditor: Auditor | None = None,
        on_media_flowing: FlowingHandler | None = None,
        on_video_mode: VideoModeHandler | None = None,
    ) -> None:
        self._session = session
        self._clinic = clinic
        self._hub = hub
        self._options = options
        self._on_media_flowing = on_media_flowing
        self._on_video_mode = on_video_mode  # the patient side tells the far end (DEVICE_STATUS)
        consultation = session.consultation
        self._cid = consultation.consultation_id
        self._user_id = consultation.user_id
        self._patient_id = consultation.patient_id
        self._warm: asyncio.Task[MediaWorker] | None = None
        self._idle: MediaWorker | None = None  # started once, never connected: the next to use
        self._hung: set[MediaWorker] = set()  # killed for their silence
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closes: set[asyncio.Future[None]] = set()  # children being closed: awaited, never cancelled
        self._closing = False
        self._credentials = TurnCredentialCache(self._fetch_turn)
        # The first connection's child, its devices open and TURN checked once the consultation is
        # connecting (a call is imminent): the offer or answer waits for neither.
        self._prepared: asyncio.Task[MediaWorker] | None = None
        self._remove_state_listener: Callable[[], None] | None = None
        # Audio only while the path cannot carry video: the patient side's child decides, the
        # provider's follows the patient's DEVICE_STATUS; new connections start in it.
        self.video_mode: VideoMode = "video"
        self._decides_video = consultation.role == "patient"
        self.signaling = CallSignaling(
            session,
            polite=consultation.role == "patient",
            turn_source=self._credentials.get,
            media_factory=self._media,
            hub=hub,
            auditor=auditor,
            accepting=lambda: session.consultation.state in ANSWERING_STATES,
            media_reuse=self._reuse,
            on_media_flowing=self._media_flowing,
        )

    @property
    def phase(self) -> Phase:
        return self.signaling.phase

    @property
    def worker(self) -> MediaWorker | None:
        """The media child of the connection that carries the call (or, before one does, the newest)."""
        media = self.signaling.media
        return media if isinstance(media, MediaWorker) else None

    async def prepared(self) -> MediaWorker | None:
        """The child being prepared for the first connection, once it is (None if none is, or its
        preparation failed)."""
        task = self._prepared
        if task is None:
            return None
        result = (await asyncio.gather(asyncio.shield(task), return_exceptions=True))[0]
        return result if isinstance(result, MediaWorker) else None

    async def start(self) -> None:
        await self.signaling.start()
        self._warm_up()
        self._credentials.prefetch()  # an offer is answered without waiting for the clinic
        self._remove_state_listener = self._session.add_state_listener(lambda _c: self._prepare())
        self._prepare()
        if not self._decides_video:
            self._spawn(self._follow_far_video_mode(self._hub.subscribe()), "video-mode-follower")

    async def call(self) -> None:
        """Call the consultation's patient (the provider calls by default)."""
        await self.signaling.call(self._patient_id)

    async def hangup(self) -> None:
        """End the call now: ``end-call`` goes out and the call is reported ended; the media
        children close behind (a connection being made, waiting for TURN, is abandoned first)."""
        await self.signaling.hangup()

    async def aclose(self) -> None:
        self._closing = True
        if self._remove_state_listener is not None:
            self._remove_state_listener()
            self._remove_state_listener = None
        await self.signaling.aclose()
        await self._credentials.aclose()
        prepared, self._prepared = self._prepared, None
        if prepared is not None:
            prepared.cancel()
            worker = (await asyncio.gather(prepared, return_exceptions=True))[0]
            if isinstance(worker, MediaWorker):
                self._close_later(worker)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        warm, self._warm = self._warm, None
        if warm is not None:
            warm.cancel()
            worker = (await asyncio.gather(warm, return_exceptions=True))[0]
            if isinstance(worker, MediaWorker):
                self._close_later(worker)
        idle, self._idle = self._idle, None
        if idle is not None:
            self._close_later(idle)
        while self._closes:
            await asyncio.gather(*self._closes, return_exceptions=True)

    # -- the media children -------------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _close_later(self, worker: MediaWorker) -> None:
        closing = asyncio.ensure_future(worker.aclose())
        self._closes.add(closing)
        closing.add_done_callback(self._closes.discard)

    def _warm_up(self) -> None:
        if self._warm is None and not self._closing:
            self._warm = asyncio.ensure_future(self._spawn_watched())

    async def _spawn_watched(self) -> MediaWorker:
        """A fresh child, watched from its first moment: one that hangs is killed, one that dies
        is reported if it was in the call."""
        spawned: list[MediaWorker] = []
        worker = await MediaWorker.spawn(
            on_event=lambda event: self._on_worker_event(spawned[0] if spawned else None, event),
            env=self._options.env,
        )
        spawned.append(worker)
        self._spawn(self._kill_if_silent(worker), "media-child-silence")
        self._spawn(self._watch(worker), "media-child-watch")
        return worker

    async def _kill_if_silent(self, worker: MediaWorker) -> None:
        """A child that hangs (a stuck codec, a stopped process) will not answer: make it a dead one
        (``_watch`` then treats it as any child that died)."""
        watched: set[asyncio.Future[Any]] = {worker.exited, worker.silent}
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if not worker.exited.done():
            log.error("media child hangs consultation=%s pid=%d: killing it", self._cid, worker.pid)
            self._hung.add(worker)
            worker.kill()

    async def _watch(self, worker: MediaWorker) -> None:
        # Shielded: this task is cancelled at close, and must not cancel the future with it
        # (``aclose`` would then take the child for exited and wait for it for ever).
        code = await asyncio.shield(worker.exited)
        hung = worker in self._hung
        self._hung.discard(worker)
        if self._idle is worker:
            self._idle = None
        if self._closing or not self.signaling.holds(worker):
            return  # closed on purpose, or not (or no longer) in the call
        reason = HUNG if hung else f"the media process exited ({_describe_exit(code)})"
        log.error("media child died consultation=%s pid=%d reason=%s", self._cid, worker.pid, reason)
        self.signaling.media_lost(worker, reason)

    async def _fetch_turn(self) -> TurnGrant:
        grant = await self._clinic.turn_credentials(self._user_id)
        return TurnGrant(TurnConfig(tuple(grant.urls), grant.username, grant.credential), grant.ttl_seconds)

    def _prepare(self) -> None:
        if (
            self._prepared is not None
            or self._closing
            or self._session.consultation.state not in ANSWERING_STATES
            or self.signaling.phase != "idle"
        ):
            return
        self._prepared = self._spawn(self._prepared_child(), "media-child-prepare")

    async def _start(self, worker: MediaWorker, turn: TurnConfig) -> None:
        fallback = self._options.fallback if self._decides_video else None
        await worker.start(turn, self._options.devices, video_mode=self.video_mode, fallback=fallback)

    async def _prepared_child(self) -> MediaWorker:
        turn = await self._credentials.get()
        worker = await self._take_warm()
        try:
            await self._start(worker, turn)
            await worker.prepare()
        except BaseException:
            self._close_later(worker)
            raise
        log.info("media prepared consultation=%s pid=%d", self._cid, worker.pid)
        return worker

    async def _take_prepared(self, turn: TurnConfig) -> MediaWorker | None:
        """The prepared child, if it was prepared with these credentials (else it serves as an
        idle one); None if there is none or its preparation failed."""
        prepared, self._prepared = self._prepared, None
        if prepared is None:
            return None
        try:
            worker = await asyncio.shield(prepared)
        except Exception as exc:
            log.warning("media not prepared consultation=%s error=%s", self._cid, describe_exception(exc))
            return None
        if worker.exited.done():
            return None
        if worker.turn != turn:
            try:
                await worker.reset()  # fresh credentials since: started afresh with them
            except CallError:
                self._close_later(worker)  # gone meanwhile: the watch reports nothing (not in the call)
                return None
            self._idle = worker
            return None
        return worker

    async def _media(self, turn: TurnConfig) -> MediaBackend:
        """A started child for a new connection: the prepared one, else the idle one, else the warm
        spare (a fresh one if that did not come up), and a new spare warms up behind it."""
        prepared = await self._take_prepared(turn)
        if prepared is not None:
            return prepared
        worker, self._idle = self._idle, None
        if worker is None or worker.exited.done():
            worker = await self._take_warm()
        try:
            try:
                await self._start(worker, turn)
            except CallError as exc:
                if exc.code != "media-process":
                    raise
                # The spare died or hung while it waited (it was killed): take a fresh one.
                log.warning(
                    "media child unusable consultation=%s reason=%s: taking a fresh one",
                    self._cid,
                    exc.reason,
                )
                self._close_later(worker)
                worker = await self._spawn_watched()
                await self._start(worker, turn)
        except BaseException:
            # Not handed over (a failed start, or the connection abandoned by a hangup): ours to close.
            self._close_later(worker)
            raise
        return worker

    async def _take_warm(self) -> MediaWorker:
        self._warm_up()
        warm, self._warm = self._warm, None
        assert warm is not None
        try:
            worker = await warm
        except Exception:
            worker = await self._spawn_watched()  # the warm child did not come up: one more try, cold
        self._warm_up()  # a spare for the next connection: a rebuild must not wait for aiortc's import
        return worker

    async def _reuse(self, media: MediaBackend, connected: bool) -> bool:
        """A child whose connection never carried media (its offer or answer failed: it is idle
        already; or superseded, given up: ``connected``, reset first) serves the next connection
        instead of a fresh spawn."""
        if self._closing or not isinstance(media, MediaWorker) or media.exited.done():
            return False
        if connected:
            try:
                await media.reset()
            except CallError as exc:
                log.warning("media child not reused consultation=%s reason=%s", self._cid, exc.reason)
                return False
        if self._closing or media.exited.done():
            return False
        previous, self._idle = self._idle, media
        if previous is not None:
            self._close_later(previous)
        return True

    def _media_flowing(self, kind: str) -> None:
        if self._on_media_flowing is not None and not self._closing:
            # Video, or audio from a kiosk whose camera is gone: the call is on either way.
            self._spawn(self._on_media_flowing(kind), "media-flowing")

    def _on_worker_event(self, worker: MediaWorker | None, event: dict[str, Any]) -> None:
        if worker is None or self._closing:
            return
        kind = event.get("event")
        if kind == "stall":
            self.signaling.media_stalled(worker)
        elif kind in ("first-frame", "resumed"):
            self.signaling.media_flowing(worker, str(event.get("kind")))
        elif kind == "quality":
            if self.signaling.is_current(worker):  # a new connection's samples are not the call's yet
                self._hub.emit(quality_event(self._cid, event))
        elif kind == "video-mode" and self.signaling.is_current(worker):
            mode = event.get("mode")
            if mode in ("video", "audio-only") and mode != self.video_mode:
                self._spawn(
                    self._video_mode_changed("audio-only" if mode == "audio-only" else "video", "network"),
                    "video-mode",
                )
        elif kind == "device-failed" and self.signaling.holds(worker):
            device, reason = str(event.get("kind")), str(event.get("reason"))
            log.warning(
                "device failed mid-call consultation=%s device=%s reason=%s", self._cid, device, reason
            )
            self._hub.emit(events.MediaFailed(self._cid, device, reason))

    # -- audio only --------------------------------------------------------------------------------

    async def _video_mode_changed(self, mode: VideoMode, source: str) -> None:
        """The call goes on in ``mode``: every child of the call is told (the one that decided knows),
        the negotiation learns whether audio alone carries the call, and so do the user and, from the
        patient side, the far end."""
        if mode == self.video_mode or self._closing:
            return
        self.video_mode = mode
        log.warning("call video mode consultation=%s mode=%s source=%s", self._cid, mode, source)
        self.signaling.set_audio_only(mode == "audio-only")
        for worker in self.signaling.children():
            if isinstance(worker, MediaWorker) and not worker.exited.done():
                try:
                    await worker.set_video_mode(mode)
                except CallError as exc:
                    log.warning("video mode not set consultation=%s reason=%s", self._cid, exc.reason)
        self._hub.emit(events.CallVideoModeChanged(self._cid, mode, source))
        if self._on_video_mode is not None:
            await self._on_video_mode(mode)

    async def _follow_far_video_mode(self, subscription: events.EventSubscription) -> None:
        """The provider's side: the patient's DEVICE_STATUS during a call says whether it goes on
        with video (its check-in verdict, before any call, is not the call's)."""
        async with subscription:
            async for event in subscription:
                if (
                    isinstance(event, events.DeviceStatusReported)
                    and event.consultation_id == self._cid
                    and event.network in ("video", "audio-only")
                    and self.signaling.phase != "idle"
                ):
                    await self._video_mode_changed(
                        "audio-only" if event.network == "audio-only" else "video", "far-end"
                    )


def _describe_exit(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def quality_event(consultation_id: str, sample: dict[str, Any]) -> events.CallQualityChanged:
    """The media child's quality sample (numbers only) as the hub's event."""

    def number(name: str) -> float | None:
        value = sample.get(name)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    def whole(name: str) -> int | None:
        value = number(name)
        return None if value is None else int(value)

    return events.CallQualityChanged(
        consultation_id,
        level=whole("level") or 0,
        rtt_ms=number("rtt_ms"),
        jitter_ms=number("jitter_ms"),
        loss_pct=number("loss_pct") or 0.0,
        fps=number("fps") or 0.0,
        width=whole("width"),
        height=whole("height"),
        inbound_kbps=number("inbound_kbps") or 0.0,
        outbound_kbps=number("outbound_kbps") or 0.0,
        video_kbps_ceiling=whole("video_kbps_ceiling"),
    )
