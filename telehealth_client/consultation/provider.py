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

The endpoint is a facade over one module per concern: ``provider_room`` (following the waiting
room, the queue, the bounds), ``provider_sessions`` (the open sessions and their chats),
``provider_actions`` (what the provider does to its own consultations), ``provider_invited`` (the
notification channel, invitations and accepting one) and ``provider_token`` (one token at a time).

Public API:

- ``ProviderEndpoint(connect, hub, user_id=..., department_id=..., state_dir=..., policy=None,
  max_consultations=500, wildcard_subscribe=True)``;
  ``await start(policy=ONCE)`` (``start_policy``: each network step once, or until it succeeds),
  ``await aclose()``; ``bus``.
- ``queue`` -> ``list[WaitingPatient]`` (checked-in or waiting, in check-in order; ``present``
  from the patient's presence on its consultation channel);
  ``sessions`` (consultation ID -> ``ConsultationSession``); ``session(consultation_id)``.
- ``await send_queue_updates(minutes_per_patient=10)``: ``QUEUE_UPDATE`` (position, estimated
  wait) to each waiting patient's own notification channel.
- Presence: at start (after the waiting room's replay) and after each reconnect of its bus it asks
  here_now for every open consultation (``presence_sync``): a patient who checked in before the
  cart started shows present, one whose leave was lost while the cart was cut off shows absent.
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
from pathlib import Path
from typing import TYPE_CHECKING

from telehealth_client import events
from telehealth_client.audit.auditor import Auditor
from telehealth_client.connector import Connector
from telehealth_client.consultation.chat import ConsultationChat
from telehealth_client.consultation.guest_access import GuestAccess
from telehealth_client.consultation.presence_sync import PresenceSync
from telehealth_client.consultation.provider_actions import OwnConsultations, guest_revoked_reporter
from telehealth_client.consultation.provider_invited import InvitedSide, NotificationListener
from telehealth_client.consultation.provider_room import (
    LISTED_CONSULTATIONS_MAX,
    MAX_FOLLOWED_CONSULTATIONS,
    MAX_JOINED_CONSULTATIONS,
    WAITING_STATES,
    WaitingPatient,
    WaitingRoom,
)
from telehealth_client.consultation.provider_sessions import CONSULTATIONS_DIR, SessionRegistry
from telehealth_client.consultation.provider_token import ProviderToken
from telehealth_client.consultation.session import ConsultationSession
from telehealth_client.consultation.start_policy import ONCE, StartPolicy
from telehealth_client.emergency.alerts import EmergencyAlerts
from telehealth_client.emergency.desk import EmergencyDesk
from telehealth_client.protocol import channels
from telehealth_client.protocol.channels import validate_id
from telehealth_client.protocol.messages import CancelReason, ConsultationInvite, InvitedRole, Summary
from telehealth_client.pubsub.bus import Subscription
from telehealth_client.security import tokens
from telehealth_client.stop_budgets import FLUSH_SECONDS, LEAVE_SECONDS, budget

if TYPE_CHECKING:
    from telehealth_client.durability import Durable
    from telehealth_client.media.call_options import MediaOptions
    from telehealth_client.media.consultation_call import ConsultationCall

__all__ = [
    "CONSULTATIONS_DIR",
    "LISTED_CONSULTATIONS_MAX",
    "MAX_FOLLOWED_CONSULTATIONS",
    "MAX_JOINED_CONSULTATIONS",
    "WAITING_STATES",
    "NotificationListener",
    "ProviderEndpoint",
    "WaitingPatient",
]


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
        self._connect = connect
        self._hub = hub
        self._durable = durable
        self._auditor: Auditor | None = None if durable is None else durable.auditor(user_id, "provider")
        self.emergency: EmergencyDesk | None = None
        self.user_id = validate_id(user_id, "userId")
        # All of this provider's consultations in one subscribe entry (PubNub wildcard subscribe;
        # the standing token's pattern ^consultation\.{p}\..*$ covers it and its presence).
        # Off (a keyset without wildcard subscribe): each consultation lists its channels instead.
        self.wildcard: str | None = f"consultation.{self.user_id}.*" if wildcard_subscribe else None
        self.department_id = validate_id(department_id, "departmentId")
        self.guests: GuestAccess | None = (
            GuestAccess(Path(state_dir), connect.clinic, guest_revoked_reporter(hub, self._auditor))
            if connect.has_clinic
            else None
        )
        self.bus = connect.bus(self.user_id)
        self._subscriptions: list[Subscription] = []
        self._guests_loaded = False
        self.alerts = EmergencyAlerts(hub)  # which escalations this cart alerts to, once each
        self._token = ProviderToken(
            connect,
            self.bus,
            hub,
            user_id=self.user_id,
            department_id=self.department_id,
            policy=policy,
            auditor=self._auditor,
            on_access_denied=lambda: self._invited.access_denied(),
        )
        self._sessions = SessionRegistry(
            self.bus,
            hub,
            user_id=self.user_id,
            state_dir=Path(state_dir),
            wildcard=self.wildcard,
            durable=durable,
            auditor=self._auditor,
            denials=self._token.denied,
            on_closing=self._session_closing,
            on_closed=self._session_closed,
        )
        self._presence = PresenceSync(self.bus, self._sessions)
        self._room = WaitingRoom(
            self._sessions,
            hub,
            user_id=self.user_id,
            department_id=self.department_id,
            max_consultations=max_consultations,
            wildcard=self.wildcard,
        )
        self._own = OwnConsultations(
            self._sessions,
            self._room,
            connect,
            hub,
            user_id=self.user_id,
            media=media,
            auditor=self._auditor,
            guests=self.guests,
        )
        self._invited = InvitedSide(
            self._sessions,
            self._token,
            self.bus,
            hub,
            self.alerts,
            lambda: self.emergency,
            user_id=self.user_id,
            department_id=self.department_id,
            auditor=self._auditor,
        )

    # -- start and stop -----------------------------------------------------------------------------

    async def start(self, policy: StartPolicy = ONCE) -> None:
        """Take the standing token, follow the waiting room and catch up. ``policy``: each network
        step tried once (``ONCE``: a failure raises) or until it succeeds (``Patience``: a service)."""
        if self._durable is not None:
            await self.alerts.load(self._durable.state_dir)
        if self._connect.has_clinic:
            await policy.attempt("the provider's standing token", self._token.standing)
        self._subscriptions.append(
            await self.bus.subscribe([channels.notification(self.user_id)], self._invited.on_notification)
        )
        room = channels.waiting_room(self.user_id)
        async with self._room.lock:
            # Before any session: a waiting consultation's session is a covered subscription.
            if self.wildcard is not None:
                self._subscriptions.append(await self.bus.subscribe([self.wildcard], with_presence=True))
            self._subscriptions.append(await self.bus.subscribe([room], self._room.on_message))
            if not self._connect.has_clinic:
                return  # no token, no history: the development relay without Access Manager only
            await policy.connected(self.bus)
            await policy.attempt("the waiting room's history", lambda: self._catch_up(room))
        if self._durable is not None:
            await self._start_emergency(self._durable, policy)

    async def _catch_up(self, room: str) -> None:
        """What happened while this endpoint was off. Safe to run again after a failure: a
        consultation resumed or a check-in followed by an earlier attempt is not opened twice."""
        if self.guests is not None and not self._guests_loaded:
            await self.guests.load()
            self._guests_loaded = True
        await self._sessions.resume_saved()
        await self._room.replay(self.bus, room)
        # Presence so far was never heard (only what happens from now on is): ask for it, and
        # again after each reconnect, when events may have been lost.
        await self._presence.sync()
        self._presence.follow_reconnects()
        if self.guests is not None:
            # Guests of a consultation that ended while this endpoint was off (or before its
            # revocations were done) lose their access now.
            self.guests.end_all_except(self._sessions.sessions)

    async def _start_emergency(self, durable: Durable, policy: StartPolicy) -> None:
        self.emergency = EmergencyDesk(
            self.bus,
            self._connect.clinic,
            durable.outbox,
            durable.router,
            self._hub,
            user_id=self.user_id,
            department_id=self.department_id,
            state_dir=durable.state_dir,
            sealer=durable.sealer,
            auditor=self._auditor,
        )
        self.emergency.listeners.append(self.alerts.escalation_seen)
        await self.emergency.start()
        desk = self.emergency
        notifications = channels.notification(self.user_id)
        await policy.attempt(
            "the missed emergency notifications", lambda: self.alerts.catch_up(desk, self.bus, notifications)
        )
        # Last: every recipient of the outbox's outcomes (chats, the desk) is registered now,
        # so what was left queued before a restart is reported to its owner when it goes out.
        durable.attach(self.bus, denials=self._token.denied)

    async def aclose(self) -> None:
        self._token.stop()
        if self.emergency is not None:
            await self.emergency.aclose()
        await self.alerts.aclose()
        await self._presence.aclose()
        await self._sessions.aclose()
        if self.guests is not None:
            await self.guests.aclose()  # what is not revoked yet is revoked at the next start
        if self._auditor is not None:
            await self._auditor.settle()  # before the flush: what the sessions' ends recorded goes too
        if self._durable is not None:
            await self._durable.detach(within=FLUSH_SECONDS)
        subscriptions, self._subscriptions = self._subscriptions, []
        # The presence leaves, side by side and bounded: the presence timeout tells the rest.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(budget(LEAVE_SECONDS)):
                await asyncio.gather(*(s.close() for s in subscriptions), return_exceptions=True)
        await self._token.aclose()  # after a replacement under way (a removed specialist's)
        await self.bus.aclose()

    # -- sessions and the queue ---------------------------------------------------------------------

    @property
    def sessions(self) -> dict[str, ConsultationSession]:
        return self._sessions.sessions

    def session(self, consultation_id: str) -> ConsultationSession:
        return self._sessions.session(consultation_id)

    def chat(self, consultation_id: str) -> ConsultationChat:
        """The chat of an open consultation; SessionError when there is none (or no storage)."""
        return self._sessions.chat(consultation_id)

    @property
    def queue(self) -> list[WaitingPatient]:
        return self._room.queue

    def _session_closing(self, session: ConsultationSession, reason: str) -> None:
        self._invited.closing(session, reason)

    async def _session_closed(self, session: ConsultationSession, reason: str) -> None:
        own = session.consultation.provider_id == self.user_id
        if own and session.consultation.state.terminal and self.guests is not None:
            self.guests.end(session.consultation_id)
        await self._invited.closed(session)

    # -- the provider's own consultations -----------------------------------------------------------

    async def send_queue_updates(self, minutes_per_patient: int = 10) -> int:
        """One ``QUEUE_UPDATE`` to each waiting patient; how many were sent."""
        return await self._own.send_queue_updates(minutes_per_patient)

    async def join(self, consultation_id: str) -> ConsultationSession:
        return await self._own.join(consultation_id)

    async def call(self, consultation_id: str) -> ConsultationCall:
        """Call the consultation's patient: returns once the offer is out; the consultation moves
        to in-progress when the patient's media arrives (video, or audio alone)."""
        return await self._own.call(consultation_id)

    async def start_consultation(self, consultation_id: str) -> None:
        await self._own.start_consultation(consultation_id)

    async def wrap_up(self, consultation_id: str) -> None:
        await self._own.wrap_up(consultation_id)

    async def end(self, consultation_id: str, *, follow_up_required: bool) -> Summary:
        return await self._own.end(consultation_id, follow_up_required=follow_up_required)

    async def cancel(self, consultation_id: str, reason: CancelReason = "no-show") -> None:
        await self._own.cancel(consultation_id, reason)

    async def invite(self, consultation_id: str, provider_id: str, role: InvitedRole) -> None:
        await self._own.invite(consultation_id, provider_id, role)

    async def remove(self, consultation_id: str, provider_id: str) -> int:
        """``PROVIDER_REMOVED`` first (the removed provider reads it), then revoke; tokens revoked."""
        return await self._own.remove(consultation_id, provider_id)

    async def assign_nurse(self, consultation_id: str, nurse_id: str) -> None:
        """The clinic records the consultation as assigned to ``nurse_id``, who may then ask for a
        token naming it, until the consultation ends."""
        await self._own.assign_nurse(consultation_id, nurse_id)

    # -- invited ------------------------------------------------------------------------------------

    @property
    def invitations(self) -> dict[str, ConsultationInvite]:
        return self._invited.invitations

    @property
    def notification_listeners(self) -> list[NotificationListener]:
        return self._invited.notification_listeners

    async def accept(self, consultation_id: str) -> ConsultationSession:
        """Join a consultation we were invited to: its token, its state from history, PROVIDER_JOINED."""
        return await self._invited.accept(consultation_id)
