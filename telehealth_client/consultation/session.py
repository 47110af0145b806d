"""One consultation at run time: the pure lifecycle plus the bus, the token and the state file.

A ``ConsultationSession`` owns, for one consultation and one endpoint (patient, provider or an
invited provider): the current ``Consultation``, its subscriptions, and (when given) the bus and
the ``TokenKeeper`` it runs on. It runs the lifecycle's effects: ``Publish`` on the bus, then
``Published`` with the publish timetoken; ``Persist`` (the state file, written behind by a
``Checkpointer``: ``act`` returns once its own action is on disk); ``Emit`` to
the ``EventHub``; ``CloseSession`` (the session closes itself in a task it owns).

Public API:

- ``add_message_handler(handler)`` (chat, chat-read, signaling: see ``MessageHandler``) and
  ``add_close_hook(hook)`` (awaited as closing starts, while the bus still works).
- ``ConsultationSession(consultation, bus, hub, state_dir=..., channels=..., keeper=None,
  owns_bus=False, on_closed=None, on_closing=None, denials=None, wildcard=None)``; ``channels`` are
  subscribed besides the consultation and its ``.video`` channel (the patient's own notification
  channel, for queue updates); ``wildcard``: an open wildcard subscription of the endpoint (a
  provider's ``consultation.{providerId}.*``) that brings the consultation while it waits, so a
  waiting consultation lists no channel of its own (``ConsultationNotFollowed`` when the listed
  ones cannot be added after the join); ``keeper`` (closed with the session) answers a publish's
  403 unless ``denials`` does;
  ``owns_bus``: the session closes the bus; ``on_closing(session, reason)`` runs synchronously as
  closing starts, ``on_closed(session, reason)`` after it.
- ``await start(catch_up=...)``: subscribe (with presence), wait until the bus is connected, then,
  if ``catch_up``, apply what history holds since the consultation's last timetoken, in order.
- ``await act(message) -> timetoken``: publish one of our own lifecycle messages (checked by
  ``lifecycle.plan`` first: a refused one raises ``TransitionError`` and publishes nothing).
- ``await apply(event)``: a lifecycle event from elsewhere (the provider's waiting room feeds
  ``PATIENT_CHECKED_IN`` and early cancellations in); refusals are logged and change nothing.
- ``presence_mark`` then ``await sync_presence(present, asked_at)``: a here_now answer about the
  consultation's channel sets who is present, except for a member a newer presence event is about.
- ``await flush()``: until the state file holds the consultation as it is now (it is written
  behind the transitions).
- ``consultation``, ``closed``, ``close_reason``, ``await wait_closed()``, ``close_soon(reason)``,
  ``await aclose(reason="stopped")`` (only ``stopped`` keeps the state file: the agent resumes it).
  Closing runs the close hooks, then leaves the channels (a presence leave, waited for at most
  ``stop_budgets.LEAVE_SECONDS``), stops the keeper and closes an owned bus.
- ``ConnectedWaiter(bus)``: ``await wait(within)`` until the bus says connected.
- ``SessionError``: an operation the session cannot do (closed, publish refused); ``code``
  is short, the text names no PHI.

Incoming messages are decoded (``protocol.messages.decode``) and applied one at a time, in
order, under one lock that ``act`` also takes: a transition never interleaves with another.
Every drop or refusal is logged with the field or code and the reason, never a payload value.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from telehealth_client import events
from telehealth_client.consultation import lifecycle, state_file
from telehealth_client.consultation.checkpoint import Checkpointer
from telehealth_client.consultation.lifecycle import (
    CloseSession,
    Consultation,
    Effect,
    Emit,
    Ignored,
    LifecycleEvent,
    Persist,
    PresenceChanged,
    Publish,
    Published,
    Received,
    StateMessage,
    TransitionError,
)
from telehealth_client.logs import describe_exception
from telehealth_client.protocol import messages
from telehealth_client.protocol.channels import ConsultationChannels
from telehealth_client.protocol.messages import (
    CancelReason,
    ConsultationCancelled,
    Drop,
    LifecycleAction,
    QueueUpdate,
    encode,
)
from telehealth_client.pubsub.bus import (
    AccessDeniedError,
    Bus,
    BusError,
    ConnectionStatus,
    Envelope,
    PresenceEvent,
    StatusChange,
    Subscription,
)
from telehealth_client.security import tokens
from telehealth_client.security.token_announcer import TokenAnnouncer
from telehealth_client.stop_budgets import LEAVE_SECONDS, budget
from telehealth_client.tasks import OwnedTasks

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS: Final = 15.0
# How long our own action waits for a token the keeper is renewing before it is refused for now.
RENEWAL_WAIT_SECONDS: Final = 10.0
# How long a patient whose access ended for good tries to tell the provider before it closes.
FAREWELL_SECONDS: Final = 5.0
# States in which a consultation with a ``wildcard`` is followed through it (nobody has joined).
WILDCARD_STATES: Final = lifecycle.BEFORE_PROVIDER
HISTORY_LIMIT: Final = 500

ClosedHandler = Callable[["ConsultationSession", str], Awaitable[None] | None]
# Told every decoded message that is not a lifecycle one (chat, chat-read, signaling), in order,
# under the session's lock, live and from catch-ups alike (the handler de-duplicates).
MessageHandler = Callable[[messages.Message, Envelope], Awaitable[None] | None]
# Told synchronously when the session starts closing, before anything of it is torn down.
ClosingHandler = Callable[["ConsultationSession", str], None]
# Told synchronously, under the session's lock, each time the consultation's state changes.
StateListener = Callable[[Consultation], None]
# Awaited as closing starts, before the session unsubscribes or closes its bus (``reason`` given).
CloseHook = Callable[[str], Awaitable[None]]
# A 403 on a publish: True when a new token is on the bus and the publish may be tried once more.
DenialHandler = Callable[[AccessDeniedError], Awaitable[bool]]


class SessionError(Exception):
    """What the session cannot do; ``code`` is machine-readable, the text holds no PHI."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


def now() -> datetime:
    return datetime.now(UTC)


def catch_up_floor(consultation: Consultation) -> int:
    """The timetoken history is read after. Before anything was received, our first own message
    (the patient's check-in) bounds it: older messages on the channel belong to earlier visits."""
    if consultation.last_timetoken or not consultation.own_timetokens:
        return consultation.last_timetoken
    return min(consultation.own_timetokens) - 1


def visit_floor(consultation: Consultation) -> int:
    """The timetoken this visit's messages come after: a (re)started endpoint reads the whole visit
    (the chat is rebuilt from it; lifecycle messages already applied are skipped as replays)."""
    if consultation.opened_timetoken:
        return consultation.opened_timetoken - 1
    return catch_up_floor(consultation)


class ConsultationSession:
    def __init__(
        self,
        consultation: Consultation,
        bus: Bus,
        hub: events.EventHub,
        *,
        state_dir: Path,
        channels: Iterable[str] = (),
        keeper: tokens.TokenKeeper | None = None,
        owns_bus: bool = False,
        on_closed: ClosedHandler | None = None,
        on_closing: ClosingHandler | None = None,
        denials: DenialHandler | None = None,
        wildcard: str | None = None,
    ) -> None:
        self._consultation = consultation
        self._bus = bus
        self._hub = hub
        self._state_dir = Path(state_dir)
        ids = ConsultationChannels.parse(consultation.consultation_id)
        self._main = ids.main
        self._channels = frozenset({ids.main, ids.video, *channels})
        # The endpoint's open wildcard subscription that brings the main channel while the
        # consultation waits (see ``_follow_locked``); None: always list the channels.
        self._wildcard = wildcard
        self._keeper = keeper
        self._denials = denials or (keeper.handle_access_denied if keeper is not None else None)
        self._owns_bus = owns_bus
        self._on_closed = on_closed
        self._on_closing = on_closing
        self._lock = asyncio.Lock()
        self._subscription: Subscription | None = None
        self._remove_status: Callable[[], None] | None = None
        self._tasks = OwnedTasks()
        self._closing: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._close_reason: str | None = None
        self._checkpoint = Checkpointer(self._state_dir, on_saved=self._saved)
        self._announce = TokenAnnouncer(hub)
        self._handlers: list[MessageHandler] = []
        self._state_listeners: list[StateListener] = []
        self._close_hooks: list[CloseHook] = []
        # The newest timetoken read on the consultation's channels (live or from history): a
        # reconnect's catch-up starts there, so chat that moves no lifecycle state is not missed.
        self._stream_mark = 0
        # Presence events applied so far, and the number of the latest about each user: a here_now
        # answer asked before an event about a user is older than it (``sync_presence``).
        self._presence_events = 0
        self._presence_latest: dict[str, int] = {}

    # -- state --------------------------------------------------------------------------------------

    @property
    def consultation(self) -> Consultation:
        return self._consultation

    @property
    def consultation_id(self) -> str:
        return self._consultation.consultation_id

    @property
    def bus(self) -> Bus:
        return self._bus

    @property
    def keeper(self) -> tokens.TokenKeeper | None:
        return self._keeper

    @property
    def closed(self) -> bool:
        return self._closing is not None or self._closed.is_set()

    @property
    def close_reason(self) -> str | None:
        return self._close_reason

    async def wait_closed(self) -> str:
        await self._closed.wait()
        return self._close_reason or "closed"

    # -- start --------------------------------------------------------------------------------------

    async def start(self, *, catch_up: bool) -> None:
        """Subscribe and, with ``catch_up``, apply what was published since the last timetoken.

        The lock is held from before the subscription until the catch-up is applied: a live
        message newer than a missed one must not be applied first (it would move the high-water
        mark past the missed one).
        """
        async with self._lock:
            self._remove_status = self._bus.add_status_listener(self._on_status)
            connected = ConnectedWaiter(self._bus)
            try:
                await self._follow_locked()
                await connected.wait(CONNECT_TIMEOUT_SECONDS)
            finally:
                connected.close()
            if catch_up:
                await self._catch_up_locked(visit_floor(self._consultation))

    async def _follow_locked(self) -> None:
        """Subscribe to what the consultation needs in its state.

        With a ``wildcard``, a waiting consultation is followed through it: its main channel
        (lifecycle, chat, the patient's presence) costs none of the subscribe request's 100
        channels, and it needs no ``.video`` (signaling starts with its provider's join; PubNub's
        wildcards never reach the four-segment ``.video``). From its provider's join on, the
        channels are listed, which also makes the provider present there.
        """
        if self.closed or self._consultation.state.terminal:
            return
        covered = self._wildcard is not None and self._consultation.state in WILDCARD_STATES
        current = self._subscription
        if current is not None and current.covered == covered:
            return
        subscription = await self._bus.subscribe(
            [self._main] if covered else sorted(self._channels),
            self._on_message,
            on_presence=self._on_presence,
            with_presence=True,
            covered=covered,
        )
        self._subscription = subscription
        if current is not None:
            await current.close()  # the main channel stays in the new one: no presence leave

    async def _catch_up_locked(self, since: int | None = None) -> None:
        if since is None:
            since = max(self._stream_mark, catch_up_floor(self._consultation))
        readable = [c for c in sorted(self._channels) if not c.endswith(".video")]  # .video is not stored
        found: list[Envelope] = []
        for channel in readable:
            found.extend(await self._read_all_since(channel, since))
        found.sort(key=lambda envelope: envelope.timetoken)
        log.info(
            "consultation catch-up consultation=%s since=%d messages=%d",
            self.consultation_id,
            since,
            len(found),
        )
        for envelope in found:
            if self.closed:
                return
            await self._receive_locked(envelope)

    # -- incoming -----------------------------------------------------------------------------------

    async def _on_message(self, envelope: Envelope) -> None:
        async with self._lock:
            if not self.closed:
                await self._receive_locked(envelope)

    async def _read_all_since(self, channel: str, since: int) -> list[Envelope]:
        """Everything stored on ``channel`` after ``since``, page by page (a long chat is more
        than one page)."""
        found: list[Envelope] = []
        while True:
            page = await self._bus.history(channel, since=since, limit=HISTORY_LIMIT)
            found.extend(page)
            if len(page) < HISTORY_LIMIT:
                return found
            since = page[-1].timetoken

    def add_close_hook(self, hook: CloseHook) -> None:
        """Run ``hook(reason)`` as closing starts, while the bus still works (the chat's wipe, the
        outbox's last sends); hooks run in the order they were added, each failure logged."""
        self._close_hooks.append(hook)

    @property
    def provider_present(self) -> bool:
        """The consultation's provider has joined and not yet ended it (a call's offers are taken)."""
        return self.consultation.state in lifecycle.PROVIDER_PRESENT

    def is_participant(self, user_id: str) -> bool:
        """Whether ``user_id``'s messages belong to the consultation (a removed guest's do not)."""
        return lifecycle.publisher_role(self.consultation, user_id) is not None

    def add_message_handler(self, handler: MessageHandler) -> Callable[[], None]:
        """Be told the non-lifecycle messages (see ``MessageHandler``); returns the remover."""
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler) if handler in self._handlers else None

    def add_state_listener(self, listener: StateListener) -> Callable[[], None]:
        """Be told (synchronously, under the session's lock) each time the state changes; returns
        the remover."""
        self._state_listeners.append(listener)
        return lambda: self._state_listeners.remove(listener) if listener in self._state_listeners else None

    async def _receive_locked(self, envelope: Envelope) -> None:
        if not envelope.channel.endswith(".video"):
            self._stream_mark = max(self._stream_mark, envelope.timetoken)
        decoded = messages.decode(envelope.channel, envelope.message, envelope.publisher)
        if isinstance(decoded, Drop):
            log.warning(
                "consultation message dropped consultation=%s channel=%s field=%s reason=%s",
                self.consultation_id,
                envelope.channel,
                decoded.field,
                decoded.reason,
            )
            return
        if not isinstance(decoded, LifecycleAction | QueueUpdate):
            # Chat, signaling and other notifications are other modules' business.
            for handler in list(self._handlers):
                try:
                    result = handler(decoded, envelope)
                    if result is not None:
                        await result
                except Exception as exc:  # one handler's bug must not stop the consultation
                    log.error(
                        "consultation message handler failed consultation=%s error=%s",
                        self.consultation_id,
                        describe_exception(exc),
                    )
            return
        assert envelope.publisher is not None  # decode refuses an unknown publisher of these
        await self._apply_locked(Received(decoded, envelope.publisher, envelope.timetoken), envelope.channel)

    async def _on_presence(self, presence: PresenceEvent) -> None:
        async with self._lock:
            if not self.closed:
                self._presence_heard(presence)
                await self._apply_locked(PresenceChanged(presence), presence.channel)

    def _presence_heard(self, presence: PresenceEvent) -> None:
        self._presence_events += 1
        if presence.user_id is not None:
            self._presence_latest[presence.user_id] = self._presence_events

    @property
    def presence_mark(self) -> int:
        """Take it before asking here_now; hand it back with the answer to ``sync_presence``."""
        return self._presence_events

    async def sync_presence(self, present: frozenset[str], asked_at: int) -> None:
        """Apply a here_now answer on the consultation's channel (``present``: who is on it),
        asked when ``presence_mark`` was ``asked_at``: each roster member is present or absent as
        the answer says, unless a presence event about that member arrived since (it is newer)."""
        async with self._lock:
            if self.closed:
                return
            for member in self._consultation.roster.members:
                here = member.user_id in present
                if here == member.present or self._presence_latest.get(member.user_id, 0) > asked_at:
                    continue
                answer = PresenceEvent(
                    self._main, "join" if here else "leave", member.user_id, len(present), 0
                )
                await self._apply_locked(PresenceChanged(answer), self._main)

    async def apply(self, event: LifecycleEvent, channel: str = "") -> None:
        """Apply an event that reached this endpoint by other means (the provider's waiting room)."""
        async with self._lock:
            if not self.closed:
                if isinstance(event, PresenceChanged):
                    self._presence_heard(event.event)
                await self._apply_locked(event, channel)

    async def _apply_locked(self, event: LifecycleEvent, channel: str) -> None:
        try:
            step = lifecycle.transition(self._consultation, event)
        except TransitionError as exc:
            action = (
                lifecycle.action_of(event.message) if not isinstance(event, PresenceChanged) else "presence"
            )
            log.warning(
                "consultation message refused consultation=%s channel=%s action=%s code=%s reason=%s",
                self.consultation_id,
                channel,
                action,
                exc.code,
                exc.text,
            )
            return
        before, self._consultation = self._consultation.state, step.consultation
        if step.consultation.state is not before:
            for listener in list(self._state_listeners):
                try:
                    listener(step.consultation)
                except Exception as exc:
                    log.error("consultation state listener failed error=%s", describe_exception(exc))
        await self._run_effects(step.effects)
        if self._subscription is not None:  # started: move to the channels the new state needs
            try:
                await self._follow_locked()
            except BusError as exc:
                # Chat and lifecycle still arrive through the wildcard; signaling does not.
                log.error(
                    "consultation channels not subscribed consultation=%s reason=%s",
                    self.consultation_id,
                    exc.reason,
                )
                self._hub.emit(events.ConsultationNotFollowed(self.consultation_id, exc.reason))

    async def _run_effects(self, effects: Iterable[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, Persist):
                # Written behind: the transition is announced now, the checkpoint follows.
                self._checkpoint.request(effect.consultation)
            elif isinstance(effect, Emit):
                self._hub.emit(effect.event)
            elif isinstance(effect, CloseSession):
                self.close_soon(effect.reason)
            elif isinstance(effect, Ignored):
                log.debug(
                    "consultation event ignored consultation=%s code=%s", self.consultation_id, effect.code
                )
            elif isinstance(effect, Publish):
                # The lifecycle never asks for a publish of its own on receipt; plan() does, in act().
                log.error("unexpected publish effect consultation=%s", self.consultation_id)

    # -- outgoing -----------------------------------------------------------------------------------

    async def act(self, message: StateMessage) -> int:
        """Publish our own ``message`` and apply it; its timetoken. TransitionError if refused."""
        async with self._lock:
            if self.closed:
                raise SessionError("closed", "the consultation session is closed")
            publishes = lifecycle.plan(self._consultation, message)
            first, *rest = publishes
            timetoken = await self._publish(first)
            await self._apply_locked(Published(message, timetoken), first.channel)
            for publish in rest:
                await self._publish(publish)
            # Our own action returns once it is durable: a restart never forgets what we did.
            await self._checkpoint.flush()
            return timetoken

    async def flush(self) -> bool:
        """Wait until the state file holds the consultation as it is now; False if that write failed."""
        return await self._checkpoint.flush()

    def _saved(self, consultation: Consultation) -> None:
        self._hub.emit(
            events.StateSaved(consultation.consultation_id, consultation.state, consultation.last_timetoken)
        )

    async def _publish(self, publish: Publish) -> int:
        payload = encode(publish.message)
        try:
            return (await self._bus.publish(publish.channel, payload, store=publish.store)).timetoken
        except AccessDeniedError as exc:
            if self._denials is not None and await self._renewed_in_time(exc):
                try:
                    return (await self._bus.publish(publish.channel, payload, store=publish.store)).timetoken
                except AccessDeniedError:
                    pass
            log.warning(
                "consultation publish refused consultation=%s channel=%s",
                self.consultation_id,
                publish.channel,
            )
            self._hub.emit(events.AccessDenied("publish"))
            self.close_soon("access-denied")
            raise SessionError(
                "access-denied", "the publish was refused by Access Manager (HTTP 403)"
            ) from None

    async def _renewed_in_time(self, exc: AccessDeniedError) -> bool:
        """The keeper's answer to a refused publish. While the clinic cannot be reached it has none:
        our own action is then refused for now (the caller may try again), never the consultation."""
        assert self._denials is not None
        try:
            async with asyncio.timeout(RENEWAL_WAIT_SECONDS):
                return await self._denials(exc)
        except TimeoutError:
            log.warning(
                "consultation publish waits for access consultation=%s reason=%s",
                self.consultation_id,
                "the token is being renewed",
            )
            raise SessionError(
                "renewing-access",
                "access is being renewed (the clinic cannot be reached yet): nothing was published",
            ) from None

    # -- status -------------------------------------------------------------------------------------

    def _on_status(self, change: StatusChange) -> None:
        self._hub.emit(events.BusStatusChanged(change.status, change.reason))
        if (
            change.status is ConnectionStatus.CONNECTED
            and change.caught_up_from is not None
            and not self.closed
        ):
            self._spawn(self._catch_up_after_reconnect(), "consultation-catch-up")

    async def _catch_up_after_reconnect(self) -> None:
        try:
            async with self._lock:
                if not self.closed:
                    await self._catch_up_locked()
        except Exception as exc:  # the live stream resumes from its cursor anyway; log and go on
            log.warning(
                "consultation catch-up failed consultation=%s error=%s",
                self.consultation_id,
                describe_exception(exc),
            )

    def token_event(self, event: tokens.TokenEvent) -> None:
        """The keeper's events: told to the user through the hub; a verdict ends the session (a
        patient first tells the far end, while its token may still allow it)."""
        self._announce(event)
        if isinstance(event, tokens.TokenAccessDenied) and not self.closed:
            if self._consultation.role == "patient" and not self._consultation.state.terminal:
                reason: CancelReason = "consent-revoked" if event.consent_withdrawn else "technical"
                self._spawn(self._cancel_then_close(reason), "consultation-denied")
            else:
                self.close_soon("access-denied")

    async def _cancel_then_close(self, reason: CancelReason) -> None:
        """Access is over for good: say so on the consultation if we still can (the provider hears
        of it), then close. A cancel that lands closes the session through the lifecycle."""
        patient_id = self._consultation.patient_id
        try:
            async with asyncio.timeout(FAREWELL_SECONDS):
                await self.act(ConsultationCancelled(cancelled_by=patient_id, reason=reason, timestamp=now()))
        except (SessionError, TransitionError, BusError, TimeoutError) as exc:
            log.warning(
                "consultation end not announced consultation=%s error=%s",
                self.consultation_id,
                describe_exception(exc),
            )
        self.close_soon("access-denied")  # no-op once the cancel closed it

    # -- closing ------------------------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[None], name: str) -> None:
        self._tasks.spawn(coroutine, name)

    def close_soon(self, reason: str) -> None:
        """Close in the session's own task (await ``wait_closed`` for the end); idempotent."""
        # Not inline: a handler runs on the bus's dispatch task, which closing the bus cancels.
        if self._closing is None:
            self._close_reason = reason
            self._closing = asyncio.ensure_future(self._close(reason))
            if self._on_closing is not None:
                try:
                    self._on_closing(self, reason)
                except Exception as exc:
                    log.error("consultation closing handler failed error=%s", describe_exception(exc))

    async def aclose(self, reason: str = "stopped") -> None:
        """Stop: unsubscribe (a presence leave), stop the keeper, close an owned bus. Idempotent.

        The state file stays unless the consultation ended: a stopped agent resumes it.
        """
        self.close_soon(reason)
        assert self._closing is not None
        await asyncio.shield(self._closing)

    async def _close(self, reason: str) -> None:
        try:
            await self._tasks.cancel_all()
            for hook in self._close_hooks:
                try:
                    await hook(reason)
                except Exception as exc:
                    log.error("consultation close hook failed error=%s", describe_exception(exc))
            if self._remove_status is not None:
                self._remove_status()
                self._remove_status = None
            if self._subscription is not None:
                await self._leave(self._subscription)
                self._subscription = None
            if self._keeper is not None:
                await self._keeper.aclose()
            if self._owns_bus:
                await self._bus.aclose()
            # The last checkpoint lands before the file may be removed, never after.
            await self._checkpoint.aclose()
            if reason != "stopped":
                # Over for this endpoint: the consultation's state leaves the disk.
                await asyncio.to_thread(state_file.remove, self._state_dir)
            log.info("consultation session closed consultation=%s reason=%s", self.consultation_id, reason)
            self._hub.emit(events.SessionClosed(self.consultation_id, reason))
        finally:
            self._closed.set()
        if self._on_closed is not None:
            try:
                result = self._on_closed(self, reason)
                if result is not None:
                    await result
            except Exception as exc:
                log.error("consultation closed handler failed error=%s", describe_exception(exc))

    async def _leave(self, subscription: Subscription) -> None:
        """Unsubscribe: a presence leave, waited for at most ``LEAVE_SECONDS`` (the peer learns
        of it by the presence timeout anyway; an unreachable network must not hold the close)."""
        within = budget(LEAVE_SECONDS)  # and never past a stop's deadline
        try:
            async with asyncio.timeout(within):
                await subscription.close()
        except TimeoutError:
            log.info(
                "consultation leave not confirmed consultation=%s within=%.1f",
                self.consultation_id,
                within,
            )
        except Exception as exc:
            log.info("consultation leave failed error=%s", describe_exception(exc))


class ConnectedWaiter:
    """Resolves when the bus says connected (or already is); access denied fails at once."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._remove = bus.add_status_listener(self._changed)

    def _changed(self, change: StatusChange) -> None:
        if self._future.done():
            return
        if change.status is ConnectionStatus.CONNECTED:
            self._future.set_result(None)
        elif change.status in (ConnectionStatus.ACCESS_DENIED, ConnectionStatus.FAILED):
            self._future.set_exception(SessionError(str(change.status), "the subscription was refused"))

    async def wait(self, within: float) -> None:
        if self._bus.status is ConnectionStatus.CONNECTED:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._future), within)
        except TimeoutError:
            raise SessionError("not-connected", f"the bus did not connect within {within:.0f} s") from None

    def close(self) -> None:
        self._remove()
        if not self._future.done():
            self._future.cancel()
