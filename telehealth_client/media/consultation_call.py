"""A consultation's call: its signaling, its media child processes, and what the consultation learns.

``ConsultationCall`` puts together, for one ``ConsultationSession``: ``CallSignaling`` on the
``.video`` channel; the ``MediaSupervisor`` that alone owns the call's media children (one per
connection, a spare started warm as soon as the call is built, the first connection's child
prepared once the consultation is connecting); TURN credentials from the clinic backend, fetched
when the call is built and held while they are fresh (``TurnCredentialCache``); and the
consequences for the consultation. The patient side answers by itself once the consultation is
connecting (the provider calls). When the far side's media (video, or audio alone from a kiosk
without a camera) first arrives the provider's side moves the consultation to in-progress
(``CONSULTATION_STARTED``).

What each child reports goes to the signaling, whose negotiation decides: a stall (no frame for
2 s) or a child that died starts a new connection in the spare while the old one stays open (make
before break); a child that hangs is killed (then it died). The consultation, chat and audit go on
untouched, and the failure is reported. A call whose path cannot carry video goes on with audio
alone (media/fallback.py): the patient side's child decides and the far end is told
(``DEVICE_STATUS`` ``network``); the provider side follows it.

Public API: ``MediaOptions(devices, env=None, fallback=..., memory_ceiling_mb=None)``;
``ConsultationCall(session, clinic, hub, options=..., auditor=None, on_media_flowing=None,
on_video_mode=None)``; ``await start()``, ``await call()`` (to the consultation's patient),
``await hangup()``, ``await prepared()``, ``phase``, ``status`` (the call's one status),
``worker``, ``video_mode``, ``await set_mute(audio=None, video=None)`` and ``mute`` (what this end
sends as silence or black frames, for every child of the call and each new one), ``await aclose()``.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable

from telehealth_client import events
from telehealth_client.audit.auditor import Auditor
from telehealth_client.media.call_options import MediaOptions as MediaOptions  # also its callers' name
from telehealth_client.media.call_session import CallSession
from telehealth_client.media.call_status import CallStatusTracker
from telehealth_client.media.child_messages import (
    ChildEvent,
    DeviceFailed,
    FirstFrame,
    Mute,
    Quality,
    Resumed,
    Stalled,
    VideoModeDecided,
)
from telehealth_client.media.common import CallError, TurnConfig
from telehealth_client.media.fallback import VideoMode
from telehealth_client.media.negotiation import Phase
from telehealth_client.media.signaling import CallSignaling
from telehealth_client.media.supervisor import MediaSupervisor
from telehealth_client.media.turn_credentials import TurnCredentialCache, TurnGrant
from telehealth_client.media.worker import MediaWorker
from telehealth_client.protocol.messages import ConsultationState
from telehealth_client.security.clinic_client import ClinicClient

log = logging.getLogger(__name__)

FlowingHandler = Callable[[str], Awaitable[None]]
VideoModeHandler = Callable[[VideoMode], Awaitable[None]]


class ConsultationCall:
    def __init__(
        self,
        session: CallSession,
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
        # Every event of the call goes through it: the call's one status follows them (call-status).
        self._events = CallStatusTracker(hub, self._cid)
        self._user_id = consultation.user_id
        self._patient_id = consultation.patient_id
        self._closing = False
        self._credentials = TurnCredentialCache(self._fetch_turn)
        self._children = MediaSupervisor(
            self._cid,
            start=self._start,
            in_call=lambda worker: self.signaling.holds(worker),
            env=options.env,
            on_event=self._on_worker_event,
            on_died=self._child_died,
            memory_ceiling_mb=options.memory_ceiling_mb,
            on_over_memory=self._child_over_memory,
        )
        self._remove_state_listener: Callable[[], None] | None = None
        # Audio only while the path cannot carry video: the patient side's child decides, the
        # provider's follows the patient's DEVICE_STATUS; new connections start in it.
        self.video_mode: VideoMode = "video"
        self._decides_video = consultation.role == "patient"
        # What the user muted: every child of the call is told, and each new one (a rebuild, a
        # replacement after a crash) starts with it or is told as it is handed over.
        self.mute = Mute()
        # A device that failed in a child before it was the call's (opened while it was prepared):
        # told when the child is handed to a connection.
        self._early_failures: weakref.WeakKeyDictionary[MediaWorker, list[DeviceFailed]] = (
            weakref.WeakKeyDictionary()
        )
        self.signaling = CallSignaling(
            session,
            polite=consultation.role == "patient",
            turn_source=self._credentials.get,
            media_factory=self._child_for,
            hub=self._events,
            auditor=auditor,
            accepting=lambda: session.provider_present,  # offers taken while the provider is there
            media_reuse=self._children.reuse,
            on_media_flowing=self._media_flowing,
            on_call_over=self._call_over,
        )

    @property
    def phase(self) -> Phase:
        return self.signaling.phase

    @property
    def status(self) -> events.CallStatusChanged:
        """The call's one status (media/call_status.py), as last told on the hub."""
        return self._events.status

    @property
    def worker(self) -> MediaWorker | None:
        """The media child of the connection that carries the call (or, before one does, the newest)."""
        media = self.signaling.media
        return media if isinstance(media, MediaWorker) else None

    async def prepared(self) -> MediaWorker | None:
        """The child being prepared for the first connection, once it is (None if none is, or its
        preparation failed)."""
        return await self._children.prepared()

    async def start(self) -> None:
        await self.signaling.start()
        self._children.warm_up()
        self._credentials.prefetch()  # an offer is answered without waiting for the clinic
        self._remove_state_listener = self._session.add_state_listener(lambda _c: self._prepare())
        self._prepare()
        if not self._decides_video:
            self._children.spawn(self._follow_far_video_mode(self._hub.subscribe()), "video-mode-follower")

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
        await self._children.aclose()

    # -- the media children -------------------------------------------------------------------------

    async def _fetch_turn(self) -> TurnGrant:
        grant = await self._clinic.turn_credentials(self._user_id)
        turn = TurnConfig(tuple(grant.urls), grant.username, grant.credential, self._options.outbound)
        return TurnGrant(turn, grant.ttl_seconds)

    def _prepare(self) -> None:
        # Only while the provider has joined and not yet called: the camera is not opened for a
        # consultation resumed in progress or in wrap-up with no call under way (its light is on).
        if (
            not self._closing
            and self._session.consultation.state is ConsultationState.CONNECTING
            and self.signaling.phase == "idle"
        ):
            self._children.prepare(self._credentials.get)

    async def _start(self, worker: MediaWorker, turn: TurnConfig) -> None:
        fallback = self._options.fallback if self._decides_video else None
        await worker.start(
            turn, self._options.devices, video_mode=self.video_mode, fallback=fallback, mute=self.mute
        )

    async def _child_for(self, turn: TurnConfig) -> MediaWorker:
        worker = await self._children.child_for(turn)
        if worker.mute != self.mute:  # started (prepared, warm) before the mute changed
            await worker.set_mute(self.mute)
        for failure in self._early_failures.pop(worker, []):
            self._device_failed(failure)
        return worker

    async def set_mute(self, *, audio: bool | None = None, video: bool | None = None) -> Mute:
        """Mute or unmute our microphone (``audio``) or camera (``video``); None leaves it as it is.
        Every child of the call is told now; the hub hears of a change. The mute holds for the rest
        of the consultation's calls."""
        mute = Mute(
            audio=self.mute.audio if audio is None else audio,
            video=self.mute.video if video is None else video,
        )
        if mute == self.mute:
            return mute
        self.mute = mute
        for worker in self.signaling.children():
            if isinstance(worker, MediaWorker) and not worker.exited.done():
                try:
                    await worker.set_mute(mute)
                except CallError as exc:  # a child going away: its replacement starts muted
                    log.warning("mute not set consultation=%s reason=%s", self._cid, exc.reason)
        self._events.emit(events.CallMuteChanged(self._cid, mute.audio, mute.video))
        return mute

    def _call_over(self) -> None:
        self.video_mode = "video"  # every call begins with video (PROTOCOL: DEVICE_STATUS network)

    def _device_failed(self, failure: DeviceFailed) -> None:
        log.warning(
            "device failed mid-call consultation=%s device=%s reason=%s",
            self._cid,
            failure.kind,
            failure.reason,
        )
        self._events.emit(events.MediaFailed(self._cid, failure.kind, failure.reason))

    def _child_died(self, worker: MediaWorker, reason: str) -> None:
        self.signaling.media_lost(worker, reason)

    def _child_over_memory(self, worker: MediaWorker, rss_mb: float) -> None:
        ceiling = self._options.memory_ceiling_mb or 0.0
        self._events.emit(events.MediaChildOverMemory(self._cid, worker.pid, round(rss_mb), round(ceiling)))

    def _media_flowing(self, kind: str) -> None:
        if self._on_media_flowing is not None and not self._closing:
            # Video, or audio from a kiosk whose camera is gone: the call is on either way.
            self._children.spawn(self._on_media_flowing(kind), "media-flowing")

    def _on_worker_event(self, worker: MediaWorker, event: ChildEvent) -> None:
        if isinstance(event, Stalled):
            self.signaling.media_stalled(worker)
        elif isinstance(event, FirstFrame | Resumed):
            self.signaling.media_flowing(worker, event.kind)
        elif isinstance(event, Quality):
            if self.signaling.is_current(worker):  # a new connection's samples are not the call's yet
                self._events.emit(quality_event(self._cid, event))
        elif isinstance(event, VideoModeDecided):
            if self.signaling.is_current(worker):
                if event.mode != self.video_mode:
                    self._children.spawn(self._video_mode_changed(event.mode, "network"), "video-mode")
            elif event.mode != self.video_mode:
                # Only the connection that carries the call decides: a new one goes the call's way.
                self._children.spawn(self._tell_video_mode(worker, self.video_mode), "video-mode")
        elif isinstance(event, DeviceFailed):
            if self.signaling.holds(worker):
                self._device_failed(event)
            else:
                self._early_failures.setdefault(worker, []).append(event)

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
            if isinstance(worker, MediaWorker):
                await self._tell_video_mode(worker, mode)
        self._events.emit(events.CallVideoModeChanged(self._cid, mode, source))
        if self._on_video_mode is not None:
            await self._on_video_mode(mode)

    async def _tell_video_mode(self, worker: MediaWorker, mode: VideoMode) -> None:
        if worker.exited.done():
            return
        try:
            await worker.set_video_mode(mode)
        except CallError as exc:
            log.warning("video mode not set consultation=%s reason=%s", self._cid, exc.reason)

    async def _follow_far_video_mode(self, subscription: events.EventSubscription) -> None:
        """The provider's side: the patient's DEVICE_STATUS during a call says whether it goes on
        with video (its check-in verdict, before any call, is not the call's)."""
        async with subscription:
            async for event in subscription:
                if (
                    isinstance(event, events.DeviceStatusReported)
                    and event.consultation_id == self._cid
                    and event.network in ("video", "audio-only")
                    and self.signaling.phase not in ("idle", "ended", "failed")
                ):
                    await self._video_mode_changed(
                        "audio-only" if event.network == "audio-only" else "video", "far-end"
                    )


def quality_event(consultation_id: str, sample: Quality) -> events.CallQualityChanged:
    """The media child's quality sample (numbers only) as the hub's event."""
    # The far end's loss of our video stays in the child (it steers the bitrate ceiling).
    return events.CallQualityChanged(consultation_id, **sample.model_dump(exclude={"event", "sent_loss_pct"}))
