"""A consultation's call: its signaling, its media child process, and what the consultation learns.

``ConsultationCall`` puts together, for one ``ConsultationSession``: ``CallSignaling`` on the
``.video`` channel; a media child (``MediaWorker``) started warm as soon as the call is built, so
the call does not wait for aiortc's import; TURN credentials from the clinic backend; and the
consequences for the consultation. The patient side answers by itself once the consultation is
connecting (the provider calls). When the far side's media (video, or audio alone from a kiosk
without a camera) first arrives the provider's side moves the consultation to in-progress
(``CONSULTATION_STARTED``). When the media child dies, or the media
stalls (the child's watchdog: no frame for 2 s), the call is rebuilt on a new connection in a fresh
child (a spare is kept warm), with back-off while rebuilds do not bring media back, until the
consultation ends; the consultation, chat and audit go on untouched, and the failure is reported.

Public API: ``MediaOptions(devices, env=None)``; ``ConsultationCall(session, clinic, hub,
options=..., auditor=None, on_media_flowing=None)``; ``await start()``, ``await call()`` (to the
consultation's patient), ``await hangup()``, ``phase``, ``worker``, ``await aclose()``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from telehealth_client import events
from telehealth_client.consultation.auditing import Auditor
from telehealth_client.consultation.session import ConsultationSession
from telehealth_client.media.common import CallError, TurnConfig
from telehealth_client.media.negotiation import Phase
from telehealth_client.media.signaling import CallSignaling, MediaBackend
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
RECOVERY_MIN_SECONDS = 1.0
RECOVERY_MAX_SECONDS = 10.0
RETRY_SECONDS = 0.5  # between tries of one rebuild while TURN is out of reach
STALL_YIELD_SECONDS = 1.0  # how long the polite side waits for the other side's rebuild
STALL_REASON = "media stalled"


@dataclass(frozen=True)
class MediaOptions:
    """The devices the media child opens and its environment (e.g. ``ALSA_CONFIG_PATH``)."""

    devices: Devices
    env: Mapping[str, str] | None = None


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
    ) -> None:
        self._session = session
        self._clinic = clinic
        self._hub = hub
        self._options = options
        self._on_media_flowing = on_media_flowing
        consultation = session.consultation
        self._cid = consultation.consultation_id
        self._user_id = consultation.user_id
        self._patient_id = consultation.patient_id
        self._warm: asyncio.Task[MediaWorker] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closes: set[asyncio.Future[None]] = set()  # children being closed: awaited, never cancelled
        self._closing = False
        self._flowing: set[str] = set()
        self._recovery: asyncio.Task[Any] | None = None
        self._attempts = 0  # rebuilds since media last flowed
        self.signaling = CallSignaling(
            session,
            polite=consultation.role == "patient",
            turn_source=self._turn,
            media_factory=self._media,
            hub=hub,
            auditor=auditor,
            accepting=lambda: session.consultation.state in ANSWERING_STATES,
        )

    @property
    def phase(self) -> Phase:
        return self.signaling.phase

    @property
    def worker(self) -> MediaWorker | None:
        media = self.signaling.media
        return media if isinstance(media, MediaWorker) else None

    async def start(self) -> None:
        await self.signaling.start()
        self._warm_up()

    async def call(self) -> None:
        """Call the consultation's patient (the provider calls by default)."""
        await self.signaling.call(self._patient_id)

    async def hangup(self) -> None:
        """End the call now: a rebuild under way is abandoned (it would hold the end-call back
        for as long as TURN is out of reach), then ``end-call`` goes out."""
        await self._stop_recovery()
        self._attempts = 0
        await self.signaling.hangup()

    async def aclose(self) -> None:
        self._closing = True
        await self._stop_recovery()
        await self.signaling.aclose()
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
                await worker.aclose()
        if self._closes:
            await asyncio.gather(*self._closes, return_exceptions=True)

    # -- the media child ----------------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _warm_up(self) -> None:
        if self._warm is None and not self._closing:
            self._warm = asyncio.ensure_future(self._spawn_watched())

    async def _spawn_watched(self) -> MediaWorker:
        """A fresh child, watched from its first moment: one that hangs while it waits is killed."""
        worker = await MediaWorker.spawn(on_event=self._on_worker_event, env=self._options.env)
        self._spawn(self._kill_if_silent(worker), "media-child-silence")
        return worker

    async def _kill_if_silent(self, worker: MediaWorker) -> None:
        """A child that hangs (a stuck codec, a stopped process) will not answer: make it a dead one
        (``_watch`` then treats it as any child that died)."""
        watched: set[asyncio.Future[Any]] = {worker.exited, worker.silent}
        await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        if not worker.exited.done():
            log.error("media child hangs consultation=%s pid=%d: killing it", self._cid, worker.pid)
            if not self._closing and self.signaling.media is worker:
                self._hub.emit(
                    events.MediaFailed(self._cid, "media-process", "the media process stopped answering")
                )
            worker.kill()

    async def _turn(self) -> TurnConfig:
        grant = await self._clinic.turn_credentials(self._user_id)
        return TurnConfig(tuple(grant.urls), grant.username, grant.credential)

    async def _media(self, turn: TurnConfig) -> MediaBackend:
        self._warm_up()
        warm, self._warm = self._warm, None
        assert warm is not None
        try:
            worker = await warm
        except Exception:
            # The warm child did not come up: one more try, cold.
            worker = await self._spawn_watched()
        self._warm_up()  # a spare for the next rebuild: recovery must not wait for aiortc's import
        self._flowing.clear()
        try:
            try:
                await worker.start(turn, self._options.devices)
            except CallError as exc:
                if exc.code != "media-process":
                    raise
                # The spare died or hung while it waited (it was killed): the call takes a fresh one.
                log.warning(
                    "media child unusable consultation=%s reason=%s: taking a fresh one",
                    self._cid,
                    exc.reason,
                )
                await worker.aclose()
                worker = await self._spawn_watched()
                await worker.start(turn, self._options.devices)
        except BaseException:
            # Not handed over (a failed start, or the rebuild abandoned by a hangup): ours to close.
            closing = asyncio.ensure_future(worker.aclose())
            self._closes.add(closing)
            closing.add_done_callback(self._closes.discard)
            await asyncio.shield(closing)
            raise
        self._spawn(self._watch(worker), "media-child-watch")
        return worker

    async def _stop_recovery(self) -> None:
        recovery, self._recovery = self._recovery, None
        if recovery is not None and not recovery.done():
            recovery.cancel()
            await asyncio.gather(recovery, return_exceptions=True)

    def _recover_soon(self, reason: str, media: MediaBackend | None) -> None:
        """Rebuild the call (once at a time), with back-off while rebuilds do not bring media back."""
        if self._closing or (self._recovery is not None and not self._recovery.done()):
            return
        self._recovery = self._spawn(self._recover(reason, media), "call-recovery")

    async def _recover(self, reason: str, media: MediaBackend | None) -> None:
        """Rebuild until a connection is up again or the consultation ends.

        A stall is seen by both sides at once: the polite side (the patient's) first gives the
        other side's new offer a moment, so that one rebuild is made, not two racing ones. While
        TURN is out of reach each try fails fast (its probe) and the next follows shortly, so the
        call is back soon after TURN is; when rebuilds succeed but bring no media, the pause before
        the next grows (1, 2, 4... 10 s) until media flows again.
        """
        self._attempts += 1
        delay = (
            0.0
            if self._attempts == 1
            else min(RECOVERY_MAX_SECONDS, RECOVERY_MIN_SECONDS * 2 ** (self._attempts - 2))
        )
        if self.signaling.polite and reason == STALL_REASON:
            delay = max(delay, STALL_YIELD_SECONDS)
        while not self._closing:
            if delay:
                await asyncio.sleep(delay)  # back-off between rebuilds, not synchronisation
                if self.signaling.media is not None and self.signaling.media is not media:
                    return  # the other side rebuilt the connection meanwhile
            if await self.signaling.rebuild(reason, media):
                return
            media = None
            delay = RETRY_SECONDS  # TURN (or the media child) not there yet: try again soon

    async def _watch(self, worker: MediaWorker) -> None:
        # A hung child is killed by its silence watch (``_kill_if_silent``): here it is one that died.
        code = await worker.exited
        if self._closing or self.signaling.media is not worker:
            return  # closed on purpose, or already replaced
        reason = (
            f"the media process exited ({'signal ' + str(-code) if code < 0 else 'exit code ' + str(code)})"
        )
        log.error("media child died consultation=%s pid=%d reason=%s", self._cid, worker.pid, reason)
        self._hub.emit(events.MediaFailed(self._cid, "media-process", reason))
        self._recover_soon(reason, worker)

    def _on_worker_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "stall":
            log.warning("call stalled consultation=%s: rebuilding it", self._cid)
            self._hub.emit(events.MediaFailed(self._cid, "network", "media stalled"))
            self._recover_soon(STALL_REASON, self.signaling.media)
        elif kind == "first-frame":
            media = str(event.get("kind"))
            # Media is back (of any kind: a far camera may be gone for good): the next trouble
            # starts the back-off afresh.
            self._attempts = 0
            if media not in self._flowing:
                first = not self._flowing
                self._flowing.add(media)
                self._hub.emit(events.MediaFlowing(self._cid, media))
                if first and self._on_media_flowing is not None:
                    # Video, or audio from a kiosk whose camera is gone: the call is on either way.
                    self._spawn(self._on_media_flowing(media), "media-flowing")
        elif kind == "quality":
            self._hub.emit(quality_event(self._cid, event))
        elif kind == "device-failed":
            device, reason = str(event.get("kind")), str(event.get("reason"))
            log.warning(
                "device failed mid-call consultation=%s device=%s reason=%s", self._cid, device, reason
            )
            self._hub.emit(events.MediaFailed(self._cid, device, reason))


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
