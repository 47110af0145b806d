"""The provider endpoint (a provider's cart, the tests' and the demo's remote peer).

It holds a standing token for its own user ID and one bus. It reads its waiting room (live, and
its history at start): each ``PATIENT_CHECKED_IN`` opens a ``ConsultationSession``
for that consultation, caught up from the check-in's timetoken, so a consultation that has ended
since leaves the queue at once. It drives its own consultations (queue updates, join, start,
wrap-up, end, no-show, invite, remove), and joins another provider's when invited.

How many it follows: every consultation of its own is brought by one wildcard subscription,
``consultation.{providerId}.*`` (with presence), so a waiting consultation costs none of PubNub's
100 channels per subscribe request; a joined one lists its channel and ``.video`` (wildcards stop at
three segments) with their presence, 4 channels. The stated bound: ``MAX_FOLLOWED_CONSULTATIONS``
(500) open consultations, of which ``MAX_JOINED_CONSULTATIONS`` (20) joined at once. Past the first,
a check-in is not followed: an error log line ``consultation not followed`` and
``events.ConsultationNotFollowed`` (IDs and the reason only); past the second, ``join`` raises
``SessionError("too-many-joined")`` before anything is published. With ``wildcard_subscribe=False``
(a keyset without wildcard subscribe, or one that refuses publishes to the four-segment ``.video``
channels once it is on: PubNub's support article on wildcard segments) every followed consultation
lists its 4 channels and the bound is ``LISTED_CONSULTATIONS_MAX`` (24).

Public API:

- ``ProviderEndpoint(connect, hub, user_id=..., department_id=..., state_dir=..., policy=None,
  max_consultations=500, wildcard_subscribe=True)``;
  ``await start()``, ``await aclose()``; ``bus``.
- ``queue`` -> ``list[WaitingPatient]`` (checked-in or waiting, in check-in order; ``present``
  from the patient's presence on its consultation channel);
  ``sessions`` (consultation ID -> ``ConsultationSession``); ``session(consultation_id)``.
- ``await send_queue_updates(minutes_per_patient=10)``: ``QUEUE_UPDATE`` (position, estimated
  wait) to each waiting patient's own notification channel.
- ``await join(consultation_id)`` (``PROVIDER_JOINED`` + ``PROVIDER_READY``), ``await
  start_consultation(...)``, ``await wrap_up(...)``, ``await end(..., follow_up_required=...)``
  (summary duration from ``lifecycle.summary_duration``), ``await cancel(..., reason="no-show")``.
- ``await invite(consultation_id, provider_id, role)``: the clinic's invitation, then
  ``PROVIDER_INVITED`` (and ``CONSULTATION_INVITE`` to the invited provider).
- ``await remove(consultation_id, provider_id)``: ``PROVIDER_REMOVED`` first, then the clinic's
  revoke-access (the removed provider reads its removal before it loses access).
- ``await assign_nurse(consultation_id, nurse_id)``: the clinic records the consultation as assigned
  to that nurse, who may then ask for a token naming it.
- ``guests`` (``GuestAccess``): every invited provider and assigned nurse is revoked when the
  consultation ends or is cancelled (``events.GuestAccessRevoked`` for each), since the channel is
  reused by the same pair's next consultation; also at start for consultations no longer run.
- Invited side: ``invitations`` (consultation ID -> ``ConsultationInvite``, from the
  notification channel; each also emits ``events.InvitationReceived``), ``await
  accept(consultation_id)``: a token naming the consultation, the consultation rebuilt from its
  history, ``PROVIDER_JOINED`` (roster only). When that session ends the standing token returns.
- ``notification_listeners``: callables given every envelope on the notification channel.
- ``emergency`` (``EmergencyDesk``, with storage) and ``alerts`` (``emergency.alerts.EmergencyAlerts``:
  the escalations this cart alerts to, each once, when confirmed open).
- Errors: ``SessionError`` (``unknown-consultation``, ``not-invited``...), ``TransitionError``
  (an action the lifecycle refuses: nothing is published), ``ClinicError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from telehealth_client import events
from telehealth_client.audit.auditor import Auditor, audit_token_event
from telehealth_client.connector import Connector
from telehealth_client.consultation import state_file
from telehealth_client.consultation.chat import ConsultationChat
from telehealth_client.consultation.guest_access import GuestAccess
from telehealth_client.consultation.lifecycle import (
    WAITING_ROOM,
    Consultation,
    PresenceChanged,
    Received,
    plan,
    summary_duration,
)
from telehealth_client.consultation.session import (
    CONNECT_TIMEOUT_SECONDS,
    WILDCARD_STATES,
    ConnectedWaiter,
    ConsultationSession,
    SessionError,
    now,
)
from telehealth_client.consultation.waiting_room import WAITING_ROOM_HISTORY, still_waiting, waiting_check_ins
from telehealth_client.emergency.alerts import EmergencyAlerts
from telehealth_client.emergency.desk import EmergencyDesk
from telehealth_client.logs import describe_exception, exception_reason
from telehealth_client.protocol import channels
from telehealth_client.protocol.channels import validate_id
from telehealth_client.protocol.messages import (
    CancelReason,
    ConsultationCancelled,
    ConsultationEnded,
    ConsultationInvite,
    ConsultationStarted,
    ConsultationState,
    Drop,
    EmergencyNotification,
    InvitedRole,
    PatientCheckedIn,
    ProviderInvited,
    ProviderJoined,
    ProviderRemoved,
    QueueUpdate,
    Summary,
    WrapUpStarted,
    decode,
)
from telehealth_client.pubsub.bus import AccessDeniedError, Envelope, PresenceEvent, Subscription
from telehealth_client.security import tokens
from telehealth_client.security.token_announcer import TokenAnnouncer

if TYPE_CHECKING:
    from telehealth_client.durability import Durable
    from telehealth_client.media.consultation_call import ConsultationCall, MediaOptions

log = logging.getLogger(__name__)

WAITING_STATES = WAITING_ROOM  # the lifecycle's: checked in, no provider yet
# The stated bound: consultations one endpoint follows at once. Waiting ones cost no channel of
# the subscribe request (its own wildcard brings them); each costs a session, a chat, a state file
# and a history read after every reconnect, so the bound is set by those.
MAX_FOLLOWED_CONSULTATIONS = 500
# Without wildcard subscribe: the cart's own channels (notification, waiting room, emergency) and
# 4 per consultation (its channel, .video and their presence) within PubNub's 100 per request.
LISTED_CONSULTATIONS_MAX = (100 - 3) // 4
# Joined ones list 4 channels each (the consultation, its .video, their presence) in PubNub's
# 100-channel subscribe request, beside the endpoint's own few.
MAX_JOINED_CONSULTATIONS = 20
CONSULTATIONS_DIR = "consultations"

NotificationListener = Callable[[Envelope], Awaitable[None] | None]


@dataclass(frozen=True)
class WaitingPatient:
    consultation_id: str
    patient_id: str
    appointment_id: str | None
    state: ConsultationState
    # Here now: subscribed to its consultation (presence there; a patient may not read, so is
    # never present on, the waiting room). A live check-in counts as a join: the patient
    # publishes it only once subscribed, before this endpoint listens to the consultation.
    present: bool


class ProviderEndpoint:
    def __init__(
        self,
        connect: Connector,
        hub: events.EventHub,
        *,
        user_id: str,
        department_id: str,
        state_dir: Path,
        policy: tokens.RefreshPolicy | None = None,
        durable: Durable | None = None,
        media: MediaOptions | None = None,
        max_consultations: int = MAX_FOLLOWED_CONSULTATIONS,
        wildcard_subscribe: bool = True,
    ) -> None:
        if max_consultations < 1:
            raise ValueError(f"max_consultations: must be at least 1, got {max_consultations}")
        # Without wildcard subscribe every followed consultation lists its 4 channels.
        self._max_consultations = (
            max_consultations if wildcard_subscribe else min(max_consultations, LISTED_CONSULTATIONS_MAX)
        )
        self._connect = connect
        self._hub = hub
        self._durable = durable
        self._media = media
        self._calls: dict[str, ConsultationCall] = {}
        self._auditor: Auditor | None = None if durable is None else durable.auditor(user_id, "provider")
        self._chats: dict[str, ConsultationChat] = {}
        self._scope = "standing"  # what the current token names, for the audit trail
        self.emergency: EmergencyDesk | None = None
        self.user_id = validate_id(user_id, "userId")
        # All of this provider's consultations in one subscribe entry (PubNub wildcard subscribe;
        # the standing token's pattern ^consultation\.{p}\..*$ covers it and its presence).
        # Off (a keyset without wildcard subscribe): each consultation lists its channels instead.
        self.wildcard: str | None = f"consultation.{self.user_id}.*" if wildcard_subscribe else None
        self.department_id = validate_id(department_id, "departmentId")
        self._state_dir = Path(state_dir) / CONSULTATIONS_DIR
        self.guests: GuestAccess | None = (
            GuestAccess(Path(state_dir), connect.clinic, self._guest_revoked) if connect.has_clinic else None
        )
        self._policy = policy
        self.bus = connect.bus(self.user_id)
        self._keeper: tokens.TokenKeeper | None = None
        self._subscriptions: list[Subscription] = []
        self._sessions: dict[str, ConsultationSession] = {}
        self._order: dict[str, int] = {}  # consultation ID -> check-in timetoken
        self.invitations: dict[str, ConsultationInvite] = {}
        self.alerts = EmergencyAlerts(hub)  # which escalations this cart alerts to, once each
        self.notification_listeners: list[NotificationListener] = []
        self._room_lock = asyncio.Lock()
        self._announce = TokenAnnouncer(hub)
        self._token_lock = asyncio.Lock()  # the keeper is replaced or closed by one task at a time
        self._closing = False

    # -- start and stop -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._durable is not None:
            await self.alerts.load(self._durable.state_dir)
        if self._connect.has_clinic:
            await self._use_token({"departmentId": self.department_id})
        connected = ConnectedWaiter(self.bus)
        self._subscriptions.append(
            await self.bus.subscribe([channels.notification(self.user_id)], self._on_notification)
        )
        room = channels.waiting_room(self.user_id)
        async with self._room_lock:
            # Before any session: a waiting consultation's session is a covered subscription.
            if self.wildcard is not None:
                self._subscriptions.append(await self.bus.subscribe([self.wildcard], with_presence=True))
            self._subscriptions.append(await self.bus.subscribe([room], self._on_room_message))
            if not self._connect.has_clinic:
                connected.close()
                return  # no token, no history: the development relay without Access Manager only
            try:
                await connected.wait(CONNECT_TIMEOUT_SECONDS)
            finally:
                connected.close()
            if self.guests is not None:
                await self.guests.load()
            await self._resume_saved()
            await self._replay_room(room)
            if self.guests is not None:
                # Guests of a consultation that ended while this endpoint was off (or before its
                # revocations were done) lose their access now.
                self.guests.end_all_except(self._sessions)
        if self._durable is not None:
            self.emergency = EmergencyDesk(
                self.bus,
                self._connect.clinic,
                self._durable.outbox,
                self._durable.router,
                self._hub,
                user_id=self.user_id,
                department_id=self.department_id,
                state_dir=self._durable.state_dir,
                sealer=self._durable.sealer,
                auditor=self._auditor,
            )
            self.emergency.listeners.append(self.alerts.escalation_seen)
            await self.emergency.start()
            await self.alerts.catch_up(self.emergency, self.bus, channels.notification(self.user_id))
            # Last: every recipient of the outbox's outcomes (chats, the desk) is registered now,
            # so what was left queued before a restart is reported to its owner when it goes out.
            self._durable.attach(self.bus, denials=self._denied)

    async def _replay_room(self, room: str) -> None:
        """Open a session for each check-in in the waiting room's history that still waits
        (``waiting_room``: superseded, cancelled or ended ones are dropped)."""
        replay = await waiting_check_ins(self.bus, self.user_id, room)
        for envelope in replay.undecodable:
            await self._room_message_locked(envelope, live=False)  # logged as a drop
        for message, envelope in replay.check_ins:
            if message.consultation_id in self._sessions:  # resumed from its state file: a replay
                await self._checked_in(message, envelope, live=False)
        unknown = [item for item in replay.check_ins if item[0].consultation_id not in self._sessions]
        for message, envelope in await still_waiting(self.bus, self.user_id, unknown):
            await self._checked_in(message, envelope, live=False)

    async def _use_token(self, context: dict[str, str]) -> None:
        """Replace the keeper: one token at a time (an invited one carries the standing grants)."""
        async with self._token_lock:
            if self._keeper is not None:
                await self._keeper.aclose()
                self._keeper = None
            if self._closing:
                return  # stopping: a keeper started now would outlive the endpoint
            request = tokens.TokenRequest(self.user_id, "provider", context)
            self._scope = context.get("consultationChannel", "standing")
            self._keeper = tokens.TokenKeeper(
                self._connect.clinic, self.bus, request, self._on_token_event, policy=self._policy
            )
            await self._keeper.start()

    async def _resume_saved(self) -> None:
        directory = self._state_dir
        names = await asyncio.to_thread(
            lambda: sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        )
        for name in names:
            try:
                consultation = await asyncio.to_thread(state_file.load, directory / name)
            except state_file.StateFileError as exc:
                log.error("saved consultation unusable reason=%s", exc.reason)
                continue
            if consultation is None or consultation.state.terminal or consultation.user_id != self.user_id:
                continue
            if consultation.provider_id != self.user_id:
                continue  # an invitation: the invited token does not outlive the agent
            session = await self._new_session(consultation)
            await session.start(catch_up=True)

    async def aclose(self) -> None:
        self._closing = True
        if self.emergency is not None:
            await self.emergency.aclose()
        await self.alerts.aclose()
        for session in list(self._sessions.values()):
            await session.aclose("stopped")
        if self.guests is not None:
            await self.guests.aclose()  # what is not revoked yet is revoked at the next start
        if self._durable is not None:
            await self._durable.detach()
        if self._auditor is not None:
            await self._auditor.settle()
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.close()
        self._subscriptions.clear()
        async with self._token_lock:  # after a replacement under way (a removed specialist's)
            if self._keeper is not None:
                await self._keeper.aclose()
                self._keeper = None
        await self.bus.aclose()

    # -- the waiting room ---------------------------------------------------------------------------

    @property
    def sessions(self) -> dict[str, ConsultationSession]:
        return dict(self._sessions)

    def session(self, consultation_id: str) -> ConsultationSession:
        session = self._sessions.get(consultation_id)
        if session is None or session.closed:
            raise SessionError("unknown-consultation", "no open consultation with that ID on this endpoint")
        return session

    @property
    def queue(self) -> list[WaitingPatient]:
        waiting = [
            s.consultation
            for s in self._sessions.values()
            if not s.closed
            and s.consultation.state in WAITING_STATES
            and s.consultation.provider_id == self.user_id
        ]
        waiting.sort(key=lambda c: self._order.get(c.consultation_id, 0))
        return [
            WaitingPatient(
                c.consultation_id, c.patient_id, c.appointment_id, c.state, _present(c, c.patient_id)
            )
            for c in waiting
        ]

    async def _on_room_message(self, envelope: Envelope) -> None:
        async with self._room_lock:
            await self._room_message_locked(envelope, live=True)

    async def _room_message_locked(self, envelope: Envelope, *, live: bool) -> None:
        decoded = decode(envelope.channel, envelope.message, envelope.publisher)
        if isinstance(decoded, Drop):
            log.warning(
                "waiting room message dropped channel=%s field=%s reason=%s",
                envelope.channel,
                decoded.field,
                decoded.reason,
            )
            return
        assert envelope.publisher is not None
        if isinstance(decoded, PatientCheckedIn):
            await self._checked_in(decoded, envelope, live=live)
        elif isinstance(decoded, ConsultationCancelled):
            # An early cancel names no consultation: it is the publisher's (a patient's) own.
            cid = channels.consultation(self.user_id, envelope.publisher)
            session = self._sessions.get(cid)
            if session is None:
                return
            state = session.consultation.state
            if state not in WAITING_STATES:
                # The waiting-room copy is for a patient who leaves before a provider joined; the
                # patient's side never reads it, so applying it later would split the two sides.
                log.info(
                    "waiting room cancel ignored consultation=%s state=%s reason=%s",
                    cid,
                    state,
                    "counts only before a provider joined",
                )
                return
            await session.apply(Received(decoded, envelope.publisher, envelope.timetoken), envelope.channel)

    async def _checked_in(self, message: PatientCheckedIn, envelope: Envelope, *, live: bool) -> None:
        cid = message.consultation_id
        session = self._sessions.get(cid)
        if session is not None and not session.closed:
            await session.apply(
                Received(message, envelope.publisher or "", envelope.timetoken), envelope.channel
            )
            return
        followed = sum(1 for s in self._sessions.values() if not s.closed)
        if followed >= self._max_consultations:
            self._not_followed(
                cid, f"limit: this endpoint follows at most {self._max_consultations} consultations"
            )
            return
        try:
            await self._open_checked_in(message, envelope, live=live)
        except Exception as exc:
            # The patient would wait in a queue nobody reads: say so, and leave nothing half-open.
            self._not_followed(cid, _reason(exc))
            stale = self._sessions.pop(cid, None)
            if stale is not None:
                await stale.aclose("not-followed")  # its state file goes too

    def _not_followed(self, consultation_id: str, reason: str) -> None:
        log.error("consultation not followed consultation=%s reason=%s", consultation_id, reason)
        self._hub.emit(events.ConsultationNotFollowed(consultation_id, reason))

    async def _open_checked_in(self, message: PatientCheckedIn, envelope: Envelope, *, live: bool) -> None:
        cid = message.consultation_id
        consultation = Consultation.new(
            consultation_id=cid, user_id=self.user_id, role="provider", department_id=self.department_id
        )
        session = await self._new_session(consultation)
        self._order[cid] = envelope.timetoken
        await session.apply(Received(message, envelope.publisher or "", envelope.timetoken), envelope.channel)
        if session.consultation.state is not ConsultationState.CHECKED_IN:
            await session.aclose("stopped")  # refused (logged): nothing to follow
            self._sessions.pop(cid, None)
            return
        if live:
            # Its join on the consultation came before we listened there: the check-in stands for it.
            joined = PresenceEvent(cid, "join", envelope.publisher, None, envelope.timetoken)
            await session.apply(PresenceChanged(joined), envelope.channel)
        await session.start(catch_up=True)

    async def _new_session(self, consultation: Consultation) -> ConsultationSession:
        own = consultation.provider_id == self.user_id
        session = ConsultationSession(
            consultation,
            self.bus,
            self._hub,
            state_dir=self._state_dir / consultation.consultation_id,
            on_closed=self._session_closed,
            on_closing=self._session_closing,
            denials=self._denied,
            wildcard=self.wildcard if own else None,
        )
        self._sessions[consultation.consultation_id] = session
        if self._durable is not None:
            chat = ConsultationChat(
                session, self._durable.outbox, self._durable.router, self._hub, auditor=self._auditor
            )
            await chat.start()  # before the session's catch-up, which feeds it
            self._chats[consultation.consultation_id] = chat
            session.add_close_hook(self._closing_hook(session, chat))
        return session

    def chat(self, consultation_id: str) -> ConsultationChat:
        """The chat of an open consultation; SessionError when there is none (or no storage)."""
        self.session(consultation_id)
        chat = self._chats.get(consultation_id)
        if chat is None:
            raise SessionError("no-chat", "this endpoint keeps no chat (no durable storage)")
        return chat

    def _closing_hook(
        self, session: ConsultationSession, chat: ConsultationChat
    ) -> Callable[[str], Awaitable[None]]:
        async def closing(reason: str) -> None:
            over = reason != "stopped"
            if over and self._auditor is not None and session.consultation.provider_joined_at is not None:
                await self._auditor.safely("session_ended", session.consultation_id, reason)
            await chat.aclose(wipe=over)
            if self._chats.get(session.consultation_id) is chat:
                del self._chats[session.consultation_id]

        return closing

    def _session_closing(self, session: ConsultationSession, reason: str) -> None:
        if session.consultation.provider_id != self.user_id and self._keeper is not None:
            # Our invitation is over and its token about to be revoked: the 403s that follow until
            # the standing token is back are expected, not something to refresh or warn about.
            self._keeper.retire()

    async def _session_closed(self, session: ConsultationSession, reason: str) -> None:
        if self._sessions.get(session.consultation_id) is session:
            del self._sessions[session.consultation_id]
        own = session.consultation.provider_id == self.user_id
        if own and session.consultation.state.terminal and self.guests is not None:
            self.guests.end(session.consultation_id)
        if session.consultation.provider_id != self.user_id and not self._closing:
            # An invited consultation is over for us: back to the standing token.
            self.invitations.pop(session.consultation_id, None)
            try:
                await self._use_token({"departmentId": self.department_id})
            except Exception as exc:
                log.error("standing token not restored error=%s", describe_exception(exc))

    async def _denied(self, error: AccessDeniedError) -> bool:
        return False if self._keeper is None else await self._keeper.handle_access_denied(error)

    def _on_token_event(self, event: tokens.TokenEvent) -> None:
        if self._auditor is not None:
            audit_token_event(self._auditor, event, self._scope)
        self._announce(event)
        if isinstance(event, tokens.TokenAccessDenied):
            for session in list(self._sessions.values()):
                if session.consultation.provider_id != self.user_id:
                    session.close_soon("access-denied")

    # -- the provider's own consultations -----------------------------------------------------------

    async def send_queue_updates(self, minutes_per_patient: int = 10) -> int:
        """One ``QUEUE_UPDATE`` to each waiting patient; how many were sent."""
        sent = 0
        for position, patient in enumerate(self.queue, start=1):
            update = QueueUpdate(
                title="Queue Update",
                body=f"You are number {position} in the queue.",
                priority="normal",
                timestamp=now(),
                consultation_id=patient.consultation_id,
                position=position,
                estimated_wait_minutes=(position - 1) * minutes_per_patient,
            )
            await self.session(patient.consultation_id).act(update)
            sent += 1
        return sent

    async def join(self, consultation_id: str) -> ConsultationSession:
        session = self.session(consultation_id)
        joined = sum(
            1 for s in self._sessions.values() if not s.closed and s.consultation.state not in WILDCARD_STATES
        )
        if (
            self.wildcard is not None
            and joined >= MAX_JOINED_CONSULTATIONS
            and session.consultation.state in WILDCARD_STATES
        ):
            # Refused before anything is published: the join would have no signaling channel.
            raise SessionError(
                "too-many-joined",
                f"this endpoint holds at most {MAX_JOINED_CONSULTATIONS} joined consultations at once",
            )
        await session.act(ProviderJoined(provider_id=self.user_id, timestamp=now()))
        if self._auditor is not None:
            await self._auditor.session_started(consultation_id)
        if self._media is not None:
            await self._call_for(session)  # warm: the call does not wait for aiortc's import
        return session

    async def call(self, consultation_id: str) -> ConsultationCall:
        """Call the consultation's patient: returns once the offer is out; the consultation moves
        to in-progress when the patient's media arrives (video, or audio alone)."""
        session = self.session(consultation_id)
        if self._media is None:
            raise SessionError("no-media", "this endpoint has no media configured")
        call = await self._call_for(session)
        await call.call()
        return call

    async def _call_for(self, session: ConsultationSession) -> ConsultationCall:
        from telehealth_client.media.consultation_call import ConsultationCall

        cid = session.consultation_id
        call = self._calls.get(cid)
        if call is None:
            assert self._media is not None
            call = ConsultationCall(
                session,
                self._connect.clinic,
                self._hub,
                options=self._media,
                auditor=self._auditor,
                on_media_flowing=lambda _kind: self._media_flowing(cid),
            )
            self._calls[cid] = call
            await call.start()

            async def closing(_reason: str) -> None:
                self._calls.pop(cid, None)
                await call.aclose()

            session.add_close_hook(closing)
        return call

    async def _media_flowing(self, consultation_id: str) -> None:
        """The patient's media is here: the consultation is in progress."""
        session = self._sessions.get(consultation_id)
        if (
            session is not None
            and not session.closed
            and session.consultation.state is ConsultationState.CONNECTING
        ):
            try:
                await self.start_consultation(consultation_id)
            except Exception as exc:
                log.warning(
                    "consultation not started on media consultation=%s error=%s",
                    consultation_id,
                    describe_exception(exc),
                )

    async def start_consultation(self, consultation_id: str) -> None:
        await self.session(consultation_id).act(
            ConsultationStarted(provider_id=self.user_id, timestamp=now())
        )

    async def wrap_up(self, consultation_id: str) -> None:
        await self.session(consultation_id).act(WrapUpStarted(provider_id=self.user_id, timestamp=now()))

    async def end(self, consultation_id: str, *, follow_up_required: bool) -> Summary:
        session = self.session(consultation_id)
        ended_at = now()
        joined_at = session.consultation.provider_joined_at or ended_at
        summary = Summary(
            duration=summary_duration(joined_at, ended_at), follow_up_required=follow_up_required
        )
        await session.act(ConsultationEnded(provider_id=self.user_id, summary=summary, timestamp=ended_at))
        return summary

    async def cancel(self, consultation_id: str, reason: CancelReason = "no-show") -> None:
        await self.session(consultation_id).act(
            ConsultationCancelled(cancelled_by=self.user_id, reason=reason, timestamp=now())
        )

    async def invite(self, consultation_id: str, provider_id: str, role: InvitedRole) -> None:
        session = self.session(consultation_id)
        provider_id = validate_id(provider_id, "invitedProviderId")
        message = ProviderInvited(
            invited_provider_id=provider_id, invited_by=self.user_id, role=role, timestamp=now()
        )
        # Checked before the clinic is asked, so a refused invitation leaves no standing one behind.
        plan(session.consultation, message)
        await self._admit(consultation_id, provider_id)
        await self._connect.clinic.invite(consultation_id, provider_id, role)
        await session.act(message)
        if self._auditor is not None:
            await self._auditor.provider_added(consultation_id, provider_id, role)

    async def remove(self, consultation_id: str, provider_id: str) -> int:
        """``PROVIDER_REMOVED`` first (the removed provider reads it), then revoke; tokens revoked."""
        session = self.session(consultation_id)
        provider_id = validate_id(provider_id, "providerId")
        await session.act(ProviderRemoved(provider_id=provider_id, removed_by=self.user_id, timestamp=now()))
        assert self.guests is not None  # the session needed the clinic's token
        return await self.guests.revoke(consultation_id, provider_id)

    async def assign_nurse(self, consultation_id: str, nurse_id: str) -> None:
        """The clinic records the consultation as assigned to ``nurse_id`` (a nurse of this
        department), who may then ask for a token naming it, until the consultation ends."""
        session = self.session(consultation_id)
        nurse_id = validate_id(nurse_id, "nurseId")
        if session.consultation.provider_id != self.user_id:
            raise SessionError("not-own-consultation", "only the consultation's provider assigns a nurse")
        if session.consultation.state.terminal:
            raise SessionError("ended", "the consultation is over")
        await self._admit(consultation_id, nurse_id)
        await self._connect.clinic.assign_nurse(consultation_id, nurse_id)
        if self._auditor is not None:
            await self._auditor.provider_added(consultation_id, nurse_id, "nurse")

    async def _admit(self, consultation_id: str, user_id: str) -> None:
        """On disk before the clinic lets ``user_id`` in: a crash in between still revokes it."""
        assert self.guests is not None  # a session of our own needed the clinic's token
        await self.guests.admit(consultation_id, user_id)

    async def _guest_revoked(self, consultation_id: str, user_id: str, revoked: int) -> None:
        if self._auditor is not None:
            await self._auditor.safely("token_revoked", consultation_id, user_id, revoked)
        self._hub.emit(events.GuestAccessRevoked(consultation_id, user_id, revoked))

    # -- invited ------------------------------------------------------------------------------------

    async def _on_notification(self, envelope: Envelope) -> None:
        decoded = decode(envelope.channel, envelope.message, envelope.publisher)
        if isinstance(decoded, Drop):
            log.warning(
                "notification dropped channel=%s field=%s reason=%s",
                envelope.channel,
                decoded.field,
                decoded.reason,
            )
        elif isinstance(decoded, ConsultationInvite):
            self.invitations[decoded.consultation_id] = decoded
            self._hub.emit(
                events.InvitationReceived(decoded.consultation_id, decoded.invited_by, decoded.role)
            )
        elif isinstance(decoded, EmergencyNotification):
            self.alerts.notified(decoded, self.emergency)
        if self.emergency is not None:
            self.alerts.read(envelope.timetoken)  # read: a restart starts after it
        for listener in list(self.notification_listeners):
            try:
                result = listener(envelope)
                if result is not None:
                    await result
            except Exception as exc:
                log.error("notification listener failed error=%s", describe_exception(exc))

    async def accept(self, consultation_id: str) -> ConsultationSession:
        """Join a consultation we were invited to: its token, its state from history, PROVIDER_JOINED."""
        invitation = self.invitations.get(consultation_id)
        if invitation is None:
            raise SessionError("not-invited", "no invitation to that consultation was received")
        await self._use_token({"departmentId": self.department_id, "consultationChannel": consultation_id})
        try:
            consultation = await self._rebuild(consultation_id)
            session = await self._new_session(consultation)
            await session.start(catch_up=True)
            if session.closed:
                raise SessionError("ended", "the consultation ended before the invitation was accepted")
            await session.act(ProviderJoined(provider_id=self.user_id, timestamp=now()))
            if self._auditor is not None:
                await self._auditor.session_started(consultation_id)
        except BaseException:
            self._sessions.pop(consultation_id, None)
            await self._use_token({"departmentId": self.department_id})
            raise
        return session

    async def _rebuild(self, consultation_id: str) -> Consultation:
        """Where to replay an invited consultation from: its provider's latest PROVIDER_JOINED."""
        base = Consultation.new(
            consultation_id=consultation_id,
            user_id=self.user_id,
            role="provider",
            department_id=self.department_id,
            state=ConsultationState.CHECKED_IN,
        )
        joined = 0
        for envelope in await self.bus.history(consultation_id, limit=WAITING_ROOM_HISTORY):
            decoded = decode(envelope.channel, envelope.message, envelope.publisher)
            if isinstance(decoded, ProviderJoined) and decoded.provider_id == base.provider_id:
                joined = envelope.timetoken
        if not joined:
            raise SessionError("not-started", "the consultation's provider has not joined it")
        return replace(base, last_timetoken=joined - 1, opened_timetoken=joined)


def _reason(exc: Exception) -> str:
    """Why a consultation could not be followed, in words that name no PHI."""
    text = exception_reason(exc)
    return text if text != "-" else describe_exception(exc)


def _present(consultation: Consultation, user_id: str) -> bool:
    member = consultation.roster.member(user_id)
    return member is not None and member.present
