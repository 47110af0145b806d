"""The call's signaling on the agent's side: the ``.video`` channel, the negotiation, the media.

``CallSignaling`` follows one ``ConsultationSession``: the session hands it every decoded signal
of the ``.video`` channel (in order, with publisher and timetoken); it steps the pure
``negotiation`` and runs the effects: it asks the media (a ``MediaCall``, or its handle in a child
process) for an offer or an answer, publishes them with ``store=0``, adds the other side's
candidates, publishes ``end-call`` for a hangup of our own, and closes the media.

TURN credentials come from ``turn_source`` (the clinic backend); when TURN refuses them the
source is asked once more (they may have expired on the way), then the call fails with the reason.
A bad SDP or candidate is dropped with a warning and the call goes on; signals from anyone but the
consultation's current participants are ignored. Before the consultation is connecting, an offer
from its own provider (and what that provider signals after it) is held for up to
``EARLY_OFFER_HOLD_SECONDS`` and answered once its join arrives; an offer from anyone else is dropped.

Public API:

- ``CallSignaling(session, polite=..., turn_source=..., media_factory=..., hub=..., auditor=None,
  accepting=lambda: True)``; ``await start()``, ``await call(remote_id)``, ``await hangup()``,
  ``await rebuild(reason, media=None)`` (a new connection for the call under way), ``phase``,
  ``media``, ``await aclose()``.
- ``MediaBackend``: what the media must offer (``MediaCall`` does).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from telehealth_client import events
from telehealth_client.consultation.auditing import Auditor
from telehealth_client.consultation.lifecycle import publisher_role
from telehealth_client.consultation.session import ConsultationSession, now
from telehealth_client.logs import describe_exception
from telehealth_client.media import negotiation as n
from telehealth_client.media.common import CallError, TurnConfig, check_sdp
from telehealth_client.protocol import messages
from telehealth_client.protocol.channels import ConsultationChannels
from telehealth_client.protocol.messages import Answer, EndCall, IceCandidate, Offer, Signal, encode
from telehealth_client.pubsub.bus import BusError, Envelope

log = logging.getLogger(__name__)

INBOX_LIMIT = 256  # signals waiting to be applied; beyond, the oldest go (a flood, not a call)
# PROTOCOL.md: the consultation's own provider's offer can overtake its PROVIDER_JOINED (another
# channel): it is held this long for the join, then dropped. No media flows before connecting.
EARLY_OFFER_HOLD_SECONDS = 5.0


class MediaBackend(Protocol):
    async def offer(self) -> str: ...

    async def answer(self, remote_offer: str) -> str: ...

    async def accept_answer(self, sdp: str) -> None: ...

    async def add_candidate(self, candidate: IceCandidate) -> None: ...

    async def aclose(self) -> None: ...


TurnSource = Callable[[], Awaitable[TurnConfig]]
# A media for a new connection (a MediaCall, or a child process's handle started with ``turn``).
MediaFactory = Callable[[TurnConfig], Awaitable[MediaBackend]]


class CallSignaling:
    def __init__(
        self,
        session: ConsultationSession,
        *,
        polite: bool,
        turn_source: TurnSource,
        media_factory: MediaFactory,
        hub: events.EventHub,
        auditor: Auditor | None = None,
        accepting: Callable[[], bool] = lambda: True,
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
        self._media: MediaBackend | None = None
        self._lock = asyncio.Lock()  # one step (and its effects) at a time
        self._remove_handler: Callable[[], None] | None = None
        self._inbox: collections.deque[n.Received] = collections.deque(maxlen=INBOX_LIMIT)
        # The provider's signals that came before its join, and when they are given up.
        self._held: collections.deque[n.Received] = collections.deque(maxlen=INBOX_LIMIT)
        self._held_expiry: asyncio.TimerHandle | None = None
        self._remove_state_listener: Callable[[], None] | None = None
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None  # applies the inbox; cancelled at close
        self._closings: set[asyncio.Task[None]] = set()  # media closes that outlived a cancelled step
        self._end_reason: str | None = None  # why the last call ended
        self._announced: n.Phase = self._negotiation.phase

    @property
    def polite(self) -> bool:
        return self._negotiation.polite

    @property
    def phase(self) -> n.Phase:
        return self._negotiation.phase

    @property
    def media(self) -> MediaBackend | None:
        return self._media

    async def start(self) -> None:
        self._remove_handler = self._session.add_message_handler(self._on_message)
        self._remove_state_listener = self._session.add_state_listener(self._state_changed)

    async def call(self, remote_id: str) -> None:
        """Call ``remote_id`` (the provider calls the patient); returns once the offer is out."""
        async with self._lock:
            await self._step(n.Call(remote_id))

    async def hangup(self) -> None:
        async with self._lock:
            await self._step(n.Hangup())

    async def rebuild(self, reason: str, media: MediaBackend | None = None) -> bool:
        """The call's media is gone (``media``: the one that went; nothing to do if it was already
        replaced or the call ended): offer again on a new connection. False when no offer could
        be made (TURN out of reach, no media process): the call stays on, the caller tries again."""
        async with self._lock:
            if media is not None and media is not self._media:
                return True  # a newer connection is already up
            await self._close_media()
            self._negotiation, effects = n.step(
                self._negotiation, n.Rebuild(reason), is_participant=self._is_participant
            )
            if not any(isinstance(effect, n.CreateOffer) for effect in effects):
                return True  # the call is over: nothing to rebuild
            log.warning("call rebuilt consultation=%s reason=%s", self._cid, reason)
            self._announce()
            outcome = await self._describe("offer", lambda media: media.offer())
            if isinstance(outcome, n.MediaFailed):
                log.warning("call rebuild failed consultation=%s reason=%s", self._cid, outcome.reason)
                return False
            if outcome is not None:
                await self._step(outcome)
            return True

    async def aclose(self) -> None:
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
            if self._negotiation.active:
                await self._step(n.Hangup("closed"))
            await self._close_media()
        if self._closings:
            await asyncio.gather(*self._closings, return_exceptions=True)

    # -- incoming -----------------------------------------------------------------------------------

    def _is_participant(self, user_id: str) -> bool:
        return publisher_role(self._session.consultation, user_id) is not None

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
        # Queued, not handled here: answering takes a media process and TURN credentials (most of a
        # second), and the session's other messages (chat, lifecycle) must not wait behind it.
        if len(self._inbox) == self._inbox.maxlen:
            self._dropped(envelope, "type", "the signaling queue is full")
        self._enqueue(received)

    def _enqueue(self, received: n.Received) -> None:
        self._inbox.append(received)
        self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._work())

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
        """Apply queued signals in order; an offer superseded by a later one from the same sender
        still in the queue is skipped (a burst of offers is answered once, the newest)."""
        while True:
            while not self._inbox:
                self._arrived.clear()
                await self._arrived.wait()
            received = self._inbox.popleft()
            if isinstance(received.signal, Offer) and any(
                isinstance(later.signal, Offer) and later.publisher == received.publisher
                for later in self._inbox
            ):
                log.info(
                    "signal ignored consultation=%s code=superseded reason=a newer offer follows", self._cid
                )
                continue
            try:
                async with self._lock:
                    await self._step(received)
            except Exception as exc:  # one signal's failure must not stop the ones after it
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
        for effect in effects:
            if isinstance(effect, n.CloseMedia):
                self._end_reason = effect.reason  # known before any nested step announces "ended"
        for effect in effects:
            follow_up = await self._run(effect)
            if follow_up is not None:
                await self._step(follow_up)
        self._announce()

    def _announce(self) -> None:
        """The phase on the hub when it changed since last told (steps nest: tell it once)."""
        phase = self._negotiation.phase
        if phase != self._announced:
            self._announced = phase
            reason = self._end_reason if phase == "ended" else None
            self._hub.emit(events.CallStateChanged(self._cid, phase, reason))

    async def _run(self, effect: n.Effect) -> n.Event | None:
        """Run one effect; the event it leads to (our description published, a failure), if any."""
        if isinstance(effect, n.Ignored):
            log.info(
                "signal ignored consultation=%s code=%s reason=%s", self._cid, effect.code, effect.reason
            )
            return None
        if isinstance(effect, n.CreateOffer):
            return await self._describe("offer", lambda media: media.offer())
        if isinstance(effect, n.AcceptOffer):
            return await self._describe("answer", lambda media: media.answer(effect.sdp))
        if isinstance(effect, n.AcceptAnswer):
            failure = await self._media_call(lambda media: media.accept_answer(effect.sdp))
            if failure is None and self._auditor is not None:
                await self._auditor.safely("video_session_started", self._cid)
            return failure
        if isinstance(effect, n.AddCandidates):
            for candidate in effect.candidates:
                failure = await self._media_call(_adding(candidate))
                if failure is not None:
                    return failure
            return None
        if isinstance(effect, n.PublishEnd):
            timetoken = await self._publish(EndCall(sender_id=self._user_id, timestamp=now()))
            return None if timetoken is None else n.EndPublished(timetoken)
        assert isinstance(effect, n.CloseMedia)
        await self._close_media()
        log.info("call ended consultation=%s reason=%s", self._cid, effect.reason)
        if self._auditor is not None:
            await self._auditor.safely("video_session_ended", self._cid, effect.reason)
        return None

    async def _describe(self, kind: str, make: Callable[[MediaBackend], Awaitable[str]]) -> n.Event | None:
        """A new media, our offer or answer from it (with fresh TURN credentials once if TURN
        refused the first), published; or MediaFailed."""
        await self._close_media()
        sdp: str | None = None
        for attempt in (1, 2):
            try:
                turn = await self._turn_source()
            except Exception as exc:
                log.warning(
                    "turn credentials unavailable consultation=%s error=%s",
                    self._cid,
                    describe_exception(exc),
                )
                return n.MediaFailed("TURN credentials unavailable")
            try:
                media = await self._media_factory(turn)
                self._media = media
                sdp = await make(media)
                break
            except CallError as exc:
                await self._close_media()
                if exc.code == "turn-refused" and attempt == 1:
                    log.info("turn credentials refused consultation=%s: fetching fresh ones", self._cid)
                    continue
                log.warning("call failed consultation=%s code=%s reason=%s", self._cid, exc.code, exc.reason)
                return n.MediaFailed(exc.reason)
        assert sdp is not None
        signal: Signal = (
            Offer(sender_id=self._user_id, timestamp=now(), sdp=sdp)
            if kind == "offer"
            else Answer(sender_id=self._user_id, timestamp=now(), sdp=sdp)
        )
        timetoken = await self._publish(signal)
        if timetoken is None:
            return n.MediaFailed("the signaling channel refused our description")
        if self._auditor is not None and kind == "answer":
            await self._auditor.safely("video_session_started", self._cid)
        return n.LocalDescription("offer" if kind == "offer" else "answer", timetoken)

    async def _media_call(self, operation: Callable[[MediaBackend], Awaitable[None]]) -> n.Event | None:
        media = self._media
        if media is None:
            return None
        try:
            await operation(media)
        except CallError as exc:
            if exc.code in ("candidate", "sdp"):
                log.warning(
                    "signal dropped consultation=%s field=%s reason=%s", self._cid, exc.code, exc.reason
                )
                return None
            return n.MediaFailed(exc.reason)
        return None

    async def _publish(self, signal: Signal) -> int | None:
        try:
            result = await self._session.bus.publish(self._video, encode(signal), store=False)
        except BusError as exc:
            log.warning(
                "signal not published consultation=%s type=%s reason=%s", self._cid, signal.type, exc.reason
            )
            return None
        return result.timetoken

    async def _close_media(self) -> None:
        """Close the current media and wait for it: the next call's media needs its devices. A
        step cancelled meanwhile (a hangup overtaking a rebuild) returns at once; the close goes
        on, owned here, and ``aclose`` waits for it."""
        media, self._media = self._media, None
        if media is None:
            return
        closing = asyncio.ensure_future(self._closed(media))
        self._closings.add(closing)
        closing.add_done_callback(self._closings.discard)
        await asyncio.shield(closing)

    async def _closed(self, media: MediaBackend) -> None:
        try:
            await media.aclose()
        except Exception as exc:
            log.error("media close failed consultation=%s error=%s", self._cid, describe_exception(exc))


def _adding(candidate: IceCandidate) -> Callable[[MediaBackend], Awaitable[None]]:
    return lambda media: media.add_candidate(candidate)
