"""The call's signaling on the agent's side: the ``.video`` channel, the negotiation, the media.

``CallSignaling`` follows one consultation's session (``media.call_session.CallSession``): the
session hands it every decoded signal of the ``.video`` channel (in order, with publisher and
timetoken); it steps the pure ``negotiation`` and runs the effects: it asks a new media (a
``MediaCall``, or a child process's handle) for each connection's offer or answer and publishes them
with ``store=0``, adds the other side's candidates to the connection they belong to, publishes
``end-call`` for a hangup of our own, arms the negotiation's timers, and closes connections
(``LinkMedia``: off the caller's path). What the media reports (``media_flowing``,
``media_stalled``, ``media_lost``) is stepped too: that is how a rebuilt connection replaces the old
one only once it carries media (PROTOCOL.md, "Recovery").

TURN credentials come from ``turn_source`` (held ahead by ``TurnCredentialCache``); when TURN
refuses them the source is asked once more for fresh ones (they may have expired on the way), and
a media process lost while making a description is replaced once. A
bad SDP or candidate is dropped with a warning, an offer no connection can be built for is refused
(``events.OfferRefused``), and the call goes on; signals from anyone but the consultation's
current participants are ignored.
Before the consultation is connecting, an offer from its own provider (and what that provider
signals after it) is held for up to ``EARLY_OFFER_HOLD_SECONDS`` and answered once its join
arrives; an offer from anyone else is dropped. A hangup goes out, and the call is reported ended,
before any media is torn down. ``aclose`` (the agent stopping) ends a call under way the same way,
its ``end-call`` waited for at most ``stop_budgets.END_CALL_SECONDS``.

Public API:

- ``CallSignaling(session, polite=..., turn_source=..., media_factory=..., hub=..., auditor=None,
  accepting=lambda: True, media_reuse=None, on_media_flowing=None)``; ``await start()``,
  ``await call(remote_id)``, ``await hangup()``, ``media_flowing(media, kind)``,
  ``media_stalled(media)``, ``media_lost(media, reason)``, ``phase``, ``media`` (the connection
  carrying the call, or the newest), ``holds(media)``, ``is_current(media)``, ``await aclose()``.
- ``MediaBackend``: what the media must offer (``MediaCall`` does).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from telehealth_client import events
from telehealth_client.audit.auditor import Auditor
from telehealth_client.logs import describe_exception
from telehealth_client.media import negotiation as n
from telehealth_client.media.call_session import CallSession
from telehealth_client.media.common import CallError, TurnConfig, as_dtls_client_offer, check_sdp
from telehealth_client.media.link_media import LinkMedia, MediaBackend, Reuse
from telehealth_client.protocol import messages
from telehealth_client.protocol.channels import ConsultationChannels
from telehealth_client.protocol.messages import Answer, EndCall, Offer, Signal, encode
from telehealth_client.pubsub.bus import BusError, Envelope
from telehealth_client.stop_budgets import END_CALL_SECONDS, budget

__all__ = ["EARLY_OFFER_HOLD_SECONDS", "CallSignaling", "MediaBackend", "MediaFactory", "TurnSource"]

log = logging.getLogger(__name__)

INBOX_LIMIT = 256  # signals waiting to be applied; beyond, the oldest go (a flood, not a call)
# PROTOCOL.md: the consultation's own provider's offer can overtake its PROVIDER_JOINED (another
# channel): it is held this long for the join, then dropped. No media flows before connecting.
EARLY_OFFER_HOLD_SECONDS = 5.0
# A new call's media opens the devices the last call's children may still hold while they close.
DEVICES_RELEASE_SECONDS = 3.0
# A media process being reset for reuse (its connection dropped) takes well under a second: waited
# for rather than a new one started (seconds of CPU on a busy kiosk).
REUSE_WAIT_SECONDS = 2.0


class TurnSource(Protocol):
    """TURN credentials for a new connection; ``fresh`` when TURN refused the last ones."""

    def __call__(self, *, fresh: bool = False) -> Awaitable[TurnConfig]: ...


# A media for a new connection (a MediaCall, or a child process's handle started with ``turn``).
MediaFactory = Callable[[TurnConfig], Awaitable[MediaBackend]]
MediaHandler = Callable[[str], None]


class CallSignaling:
    def __init__(
        self,
        session: CallSession,
        *,
        polite: bool,
        turn_source: TurnSource,
        media_factory: MediaFactory,
        hub: events.EventSink,
        auditor: Auditor | None = None,
        accepting: Callable[[], bool] = lambda: True,
        media_reuse: Reuse | None = None,
        on_media_flowing: MediaHandler | None = None,
        on_call_over: Callable[[], None] | None = None,
    ) -> None:
        self._session = session
        consultation = session.consultation
        self._cid = consultation.consultation_id
        self._video = ConsultationChannels.parse(self._cid).video
        self._user_id = consultation.user_id
        self._negotiation = n.Negotiation.new(self._user_id, polite=polite)
        self._turn_source = turn_source
        self._media_factory = media_factory
        self._hub = hub
        self._auditor = auditor
        self._accepting = accepting
        self._on_media_flowing = on_media_flowing
        self._on_call_over = on_call_over
        self._media = LinkMedia(self._cid, reuse=media_reuse)
        self._lock = asyncio.Lock()  # one step (and its effects) at a time
        self._remove_handler: Callable[[], None] | None = None
        self._inbox: collections.deque[n.Event] = collections.deque(maxlen=INBOX_LIMIT)
        # The provider's signals that came before its join, and when they are given up.
        self._held: collections.deque[n.Received] = collections.deque(maxlen=INBOX_LIMIT)
        self._held_expiry: asyncio.TimerHandle | None = None
        self._remove_state_listener: Callable[[], None] | None = None
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None  # applies the inbox; cancelled at close
        self._building = False  # the worker is making a connection's offer or answer
        self._interrupting = False  # a hangup stops the worker (set while it waits for it)
        self._timers: dict[n.Timer, asyncio.TimerHandle] = {}
        self._closed = False
        self._end_reason: str | None = None  # why the last call ended
        self._announced: n.Phase = self._negotiation.phase
        self._session_audited = False  # video_session_started told for the call under way

    @property
    def polite(self) -> bool:
        return self._negotiation.polite

    @property
    def phase(self) -> n.Phase:
        return self._negotiation.phase

    @property
    def media(self) -> MediaBackend | None:
        """The media of the connection that carries the call (or, before one does, the newest)."""
        links = self._negotiation.links
        for link in (links.current, links.pending, links.building):
            media = None if link is None else self._media.get(link.id)
            if media is not None:
                return media
        return None

    def holds(self, media: object) -> bool:
        """Whether ``media`` is one of the call's connections (the current one, or a new one)."""
        return self._media.link_of(media) is not None

    def is_current(self, media: object) -> bool:
        return self.media is media

    def children(self) -> tuple[MediaBackend, ...]:
        """The media of every connection of the call (the current one, new ones)."""
        return self._media.held

    def set_audio_only(self, on: bool) -> None:
        """The call goes on with audio alone (``on``), or with video again: what carries it."""
        self._enqueue(n.AudioOnly(on))

    async def start(self) -> None:
        self._remove_handler = self._session.add_message_handler(self._on_message)
        self._remove_state_listener = self._session.add_state_listener(self._state_changed)

    async def call(self, remote_id: str) -> None:
        """Call ``remote_id`` (the provider calls the patient); returns once the offer is out."""
        async with self._lock:
            await self._step(n.Call(remote_id))

    async def hangup(self) -> None:
        """End the call now: a connection being made (waiting for TURN, say) is abandoned first,
        then ``end-call`` goes out and the call is reported ended; the media closes behind."""
        await self._interrupt_build()
        async with self._lock:
            await self._step(n.Hangup())
        self._resume_work()

    def media_flowing(self, media: object, kind: str) -> None:
        """``media`` shows ``kind`` (its first frame, or its first after a stall)."""
        self._from_media(media, lambda link: n.Flowing(link, kind))

    def media_stalled(self, media: object) -> None:
        self._from_media(media, n.Stalled)

    def media_lost(self, media: object, reason: str) -> None:
        """``media``'s process is gone (``reason``: how it ended)."""
        self._from_media(media, lambda link: n.Lost(link, reason))

    def _from_media(self, media: object, event: Callable[[int], n.Event]) -> None:
        link = self._media.link_of(media)
        if link is not None:
            self._enqueue(event(link))

    async def aclose(self) -> None:
        self._closed = True
        if self._remove_handler is not None:
            self._remove_handler()
            self._remove_handler = None
        if self._remove_state_listener is not None:
            self._remove_state_listener()
            self._remove_state_listener = None
        self._drop_held(None)
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        self._inbox.clear()
        async with self._lock:
            if self._negotiation.active or self._negotiation.phase == "answering":
                await self._step(n.Hangup("closed"))
            self._cancel_timers()
        await self._media.aclose()

    # -- incoming -----------------------------------------------------------------------------------

    def _is_participant(self, user_id: str) -> bool:
        return self._session.is_participant(user_id)

    async def _on_message(self, message: messages.Message, envelope: Envelope) -> None:
        if envelope.channel != self._video or not isinstance(
            message, Offer | Answer | messages.IceCandidateMessage | EndCall
        ):
            return
        publisher = envelope.publisher or ""
        if isinstance(message, Offer | Answer):
            try:
                check_sdp(message.sdp, message.type)
            except CallError as exc:
                self._dropped(envelope, "sdp", exc.reason)
                if isinstance(message, Offer) and publisher != self._user_id:
                    self._hub.emit(events.OfferRefused(self._cid, "sdp", exc.reason))
                return
        received = n.Received(message, publisher, envelope.timetoken)
        if publisher != self._user_id and not self._accepting():
            own_provider = publisher == self._session.consultation.provider_id
            if own_provider and (isinstance(message, Offer) or self._held):
                self._hold(received)
                return
            if isinstance(message, Offer):
                self._dropped(envelope, "type", "an offer before the consultation is connecting")
                return
        # Queued, not handled here: answering takes a media process and TURN credentials, and the
        # session's other messages (chat, lifecycle) must not wait behind it.
        if len(self._inbox) == self._inbox.maxlen:
            self._dropped(envelope, "type", "the signaling queue is full")
        self._enqueue(received)

    def _enqueue(self, event: n.Event) -> None:
        if self._closed:
            return
        self._inbox.append(event)
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._work())

    def _resume_work(self) -> None:
        if self._inbox and not self._closed and (self._worker is None or self._worker.done()):
            self._worker = asyncio.ensure_future(self._work())

    async def _interrupt_build(self) -> None:
        """Stop the worker if it is making a connection (it may wait seconds for TURN); what it
        took is closed by the step that follows, and the worker resumes after it."""
        worker = self._worker
        if worker is not None and self._building and not worker.done():
            # The flag too: a cancellation can be lost inside a library await (3.11's wait_for),
            # and the worker would go on building connections while we wait for it.
            self._interrupting = True
            try:
                worker.cancel()
                await asyncio.gather(worker, return_exceptions=True)
            finally:
                self._interrupting = False

    def _hold(self, received: n.Received) -> None:
        """Keep the provider's early signal until its join arrives, at most the hold's time."""
        self._held.append(received)
        if self._held_expiry is None:
            log.info("offer held for the provider's join consultation=%s", self._cid)
            loop = asyncio.get_running_loop()
            self._held_expiry = loop.call_later(EARLY_OFFER_HOLD_SECONDS, self._drop_held, "no join in time")

    def _drop_held(self, reason: str | None) -> None:
        if self._held_expiry is not None:
            self._held_expiry.cancel()
            self._held_expiry = None
        if reason is not None:
            for received in self._held:
                log.warning(
                    "signal dropped consultation=%s timetoken=%d field=type reason=%s",
                    self._cid,
                    received.timetoken,
                    f"held for the provider's join: {reason}",
                )
        self._held.clear()

    def _state_changed(self, _consultation: object) -> None:
        """The join arrived (the consultation is connecting): what was held is answered now."""
        if self._held and self._accepting():
            held = list(self._held)
            self._drop_held(None)
            log.info("held offer released consultation=%s signals=%d", self._cid, len(held))
            for received in held:
                self._enqueue(received)
        elif self._held and self._session.consultation.state.terminal:
            self._drop_held("the consultation ended")

    async def _work(self) -> None:
        """Apply queued events in order; an offer superseded by a later one from the same sender
        still in the queue is skipped (a burst of offers is answered once, the newest)."""
        while not self._interrupting:
            while not self._inbox:
                self._arrived.clear()
                await self._arrived.wait()
            event = self._inbox.popleft()
            if (
                isinstance(event, n.Received)
                and isinstance(event.signal, Offer)
                and any(
                    isinstance(later, n.Received)
                    and isinstance(later.signal, Offer)
                    and later.publisher == event.publisher
                    for later in self._inbox
                )
            ):
                log.info(
                    "signal ignored consultation=%s code=superseded reason=a newer offer follows", self._cid
                )
                continue
            try:
                async with self._lock:
                    await self._step(event)
            except Exception as exc:  # one event's failure must not stop the ones after it
                log.error(
                    "signal handling failed consultation=%s error=%s", self._cid, describe_exception(exc)
                )

    def _dropped(self, envelope: Envelope, field: str, reason: str) -> None:
        log.warning(
            "signal dropped consultation=%s timetoken=%d field=%s reason=%s",
            self._cid,
            envelope.timetoken,
            field,
            reason,
        )

    # -- effects ------------------------------------------------------------------------------------

    async def _step(self, event: n.Event) -> None:
        self._negotiation, effects = n.step(self._negotiation, event, is_participant=self._is_participant)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "call step consultation=%s event=%s effects=%s",
                self._cid,
                _named(event),
                ",".join(_named(effect) for effect in effects),
            )
        for effect in effects:
            if isinstance(effect, n.CloseMedia):
                self._end_reason = effect.reason  # known before any nested step announces "ended"
        for effect in effects:
            follow_up = await self._run(effect)
            if follow_up is not None:
                await self._step(follow_up)
        await self._announce()

    async def _announce(self) -> None:
        """The phase on the hub when it changed since last told (steps nest: tell it once)."""
        phase = self._negotiation.phase
        if phase == self._announced:
            return
        self._announced = phase
        reason = self._end_reason if phase in ("ended", "failed") else None
        self._hub.emit(events.CallStateChanged(self._cid, phase, reason))
        if phase == "connected" and not self._session_audited and self._auditor is not None:
            self._session_audited = True  # once a call: its rebuilds are the same video session
            await self._auditor.safely("video_session_started", self._cid)

    async def _run(self, effect: n.Effect) -> n.Event | None:
        """Run one effect; the event it leads to (our description published, a failure), if any."""
        if isinstance(effect, n.Ignored):
            log.info(
                "signal ignored consultation=%s code=%s reason=%s", self._cid, effect.code, effect.reason
            )
        elif isinstance(effect, n.Refused):
            log.warning(
                "offer refused consultation=%s code=%s reason=%s", self._cid, effect.code, effect.reason
            )
            self._hub.emit(events.OfferRefused(self._cid, effect.code, effect.reason))
        elif isinstance(effect, n.CreateOffer):
            return await self._describe(effect.link, "offer", lambda media: media.offer())
        elif isinstance(effect, n.AcceptOffer):
            offer = as_dtls_client_offer(effect.sdp) if effect.dtls_client else effect.sdp
            return await self._describe(effect.link, "answer", lambda media: media.answer(offer))
        elif isinstance(effect, n.AcceptAnswer):
            return await self._accept_answer(effect)
        elif isinstance(effect, n.AddCandidates):
            await self._add_candidates(effect)
        elif isinstance(effect, n.CloseLink):
            log.info(
                "connection closed consultation=%s link=%d reason=%s", self._cid, effect.link, effect.reason
            )
            if effect.reuse:
                self._media.recycle(effect.link)  # its media process may serve the next one
            else:
                self._media.close(effect.link)
        elif isinstance(effect, n.PublishEnd):
            # Closing (the agent stops): the peer is told, but never waited on past the stop's budget.
            within = budget(END_CALL_SECONDS) if self._closed else None
            end = EndCall(sender_id=self._user_id, timestamp=datetime.now(UTC))
            timetoken = await self._publish(end, within=within)
            return None if timetoken is None else n.EndPublished(timetoken)
        elif isinstance(effect, n.CloseMedia):
            await self._call_over(effect.reason)
        elif isinstance(effect, n.Arm):
            self._arm(effect.timer, effect.seconds)
        elif isinstance(effect, n.MediaUp):
            self._hub.emit(events.MediaFlowing(self._cid, effect.kind))
            if self._on_media_flowing is not None:
                self._on_media_flowing(effect.kind)
        else:
            assert isinstance(effect, n.MediaDown)
            log.warning(
                "call media down consultation=%s source=%s reason=%s", self._cid, effect.source, effect.reason
            )
            self._hub.emit(events.MediaFailed(self._cid, effect.source, effect.reason))
        return None

    async def _call_over(self, reason: str) -> None:
        """Told first, torn down after: the call is reported ended, then its media closes in
        tasks of ``LinkMedia`` (awaited at ``aclose``), never on the caller's path."""
        await self._announce()
        self._cancel_timers()
        self._media.close_all()
        self._session_audited = False
        if self._on_call_over is not None:
            self._on_call_over()
        log.info("call ended consultation=%s reason=%s", self._cid, reason)
        if self._auditor is not None:
            await self._auditor.safely("video_session_ended", self._cid, reason)

    async def _describe(
        self, link: int, kind: str, make: Callable[[MediaBackend], Awaitable[str]]
    ) -> n.Event:
        """A new media for ``link``, our offer or answer from it (with fresh TURN credentials once
        if TURN refused the first), published; or LinkFailed with the reason."""
        if not self._media.links:
            await self._media.closed(DEVICES_RELEASE_SECONDS)  # a new call: the last one's devices
        self._building = True
        try:
            await self._media.returned(REUSE_WAIT_SECONDS)  # a media process coming back serves this
            fresh = False
            for attempt in (1, 2):
                try:
                    turn = await self._turn_source(fresh=fresh)
                except Exception as exc:
                    log.warning(
                        "turn credentials unavailable consultation=%s error=%s",
                        self._cid,
                        describe_exception(exc),
                    )
                    return n.LinkFailed(link, "turn-unreachable", "TURN credentials unavailable")
                try:
                    media = await self._media_factory(turn)
                except CallError as exc:
                    return self._failed(link, exc.code, exc.reason)
                except Exception as exc:
                    return self._failed(link, "media-process", describe_exception(exc))
                self._media.put(link, media)
                try:
                    sdp = await make(media)
                except CallError as exc:
                    if exc.code == "media-process":
                        self._media.close(link)  # it died or did not answer: never reused
                    else:
                        self._media.give_back(link)
                    if exc.code == "turn-refused" and attempt == 1:
                        log.info("turn credentials refused consultation=%s: fetching fresh ones", self._cid)
                        fresh = True
                        continue
                    if exc.code == "media-process" and attempt == 1:
                        # Its process died or hung (and was killed) on the way: another one makes it.
                        log.warning("media process lost consultation=%s: trying another", self._cid)
                        continue
                    return self._failed(link, exc.code, exc.reason)
                break
            signal: Signal = (
                Offer(sender_id=self._user_id, timestamp=datetime.now(UTC), sdp=sdp)
                if kind == "offer"
                else Answer(sender_id=self._user_id, timestamp=datetime.now(UTC), sdp=sdp)
            )
            timetoken = await self._publish(signal)
        finally:
            self._building = False
        if timetoken is None:
            self._media.close(link)
            return self._failed(link, "publish", "the signaling channel refused our description")
        return n.LocalDescription(link, "offer" if kind == "offer" else "answer", timetoken)

    def _failed(self, link: int, code: str, reason: str) -> n.LinkFailed:
        log.warning(
            "connection failed consultation=%s link=%d code=%s reason=%s", self._cid, link, code, reason
        )
        return n.LinkFailed(link, code, reason)

    async def _accept_answer(self, effect: n.AcceptAnswer) -> n.Event | None:
        media = self._media.get(effect.link)
        if media is None:
            return None
        try:
            await media.accept_answer(effect.sdp)
        except CallError as exc:
            if exc.code == "media-process":
                return None  # its process is gone: media_lost tells
            return self._failed(effect.link, exc.code, exc.reason)
        return None

    async def _add_candidates(self, effect: n.AddCandidates) -> None:
        media = self._media.get(effect.link)
        if media is None:
            return  # the connection is gone (its answer failed, say)
        for candidate in effect.candidates:
            try:
                await media.add_candidate(candidate)
            except CallError as exc:
                log.warning(
                    "signal dropped consultation=%s field=%s reason=%s", self._cid, exc.code, exc.reason
                )
                if exc.code == "media-process":
                    return

    def _arm(self, timer: n.Timer, seconds: float) -> None:
        previous = self._timers.pop(timer, None)
        if previous is not None:
            previous.cancel()
        self._timers[timer] = asyncio.get_running_loop().call_later(seconds, self._expired, timer)

    def _expired(self, timer: n.Timer) -> None:
        self._timers.pop(timer, None)
        self._enqueue(n.Expired(timer))

    def _cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    async def _publish(self, signal: Signal, *, within: float | None = None) -> int | None:
        """Publish ``signal`` on the ``.video`` channel; its timetoken, or None when it did not go
        out (refused, failed, or no answer within ``within`` seconds when given)."""
        try:
            async with asyncio.timeout(within):
                result = await self._session.bus.publish(self._video, encode(signal), store=False)
        except BusError as exc:
            log.warning(
                "signal not published consultation=%s type=%s reason=%s", self._cid, signal.type, exc.reason
            )
            return None
        except TimeoutError:
            log.warning(
                "signal not published consultation=%s type=%s reason=no answer within %.1f s",
                self._cid,
                signal.type,
                within,
            )
            return None
        return result.timetoken


def _named(item: n.Event | n.Effect) -> str:
    """An event or effect for the log: its kind and connection, never an SDP."""
    if isinstance(item, n.Received):
        return f"Received({item.signal.type})"
    link = getattr(item, "link", None)
    return type(item).__name__ if link is None else f"{type(item).__name__}({link})"
