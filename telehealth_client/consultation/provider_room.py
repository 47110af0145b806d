"""Following a provider's waiting room: each check-in opens a session, the queue, the bounds.

Each ``PATIENT_CHECKED_IN`` on the waiting room (live, or replayed from its history at start)
opens a ``ConsultationSession`` for that consultation, caught up from the check-in's timetoken, so
a consultation that has ended since leaves the queue at once. A patient's early cancel on the
waiting room counts only while no provider has joined.

The stated bounds: ``MAX_FOLLOWED_CONSULTATIONS`` open consultations (``LISTED_CONSULTATIONS_MAX``
without wildcard subscribe), of which ``MAX_JOINED_CONSULTATIONS`` joined at once. Past the
first, a check-in is not followed (an error log line ``consultation not followed`` and
``events.ConsultationNotFollowed``, IDs and the reason only); past the second, ``check_join``
raises ``SessionError("too-many-joined")`` before anything is published.

Public API: ``WaitingRoom(sessions, hub, user_id=..., department_id=..., max_consultations=...,
wildcard=...)``; ``lock`` (held while a message is handled); ``queue`` -> ``list[WaitingPatient]``;
``await on_message(envelope)``; ``await replay(bus, room)`` (under ``lock``); ``check_join(session)``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from telehealth_client import events
from telehealth_client.consultation.lifecycle import (
    RULES,
    WAITING_ROOM,
    Consultation,
    PresenceChanged,
    Received,
)
from telehealth_client.consultation.provider_sessions import SessionRegistry
from telehealth_client.consultation.session import WILDCARD_STATES, ConsultationSession, SessionError
from telehealth_client.consultation.waiting_room import still_waiting, waiting_check_ins
from telehealth_client.logs import describe_exception, exception_reason
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import (
    ConsultationCancelled,
    ConsultationState,
    Drop,
    PatientCheckedIn,
    decode,
)
from telehealth_client.pubsub.bus import Bus, Envelope, PresenceEvent

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


@dataclass(frozen=True)
class WaitingPatient:
    consultation_id: str
    patient_id: str
    appointment_id: str | None
    state: ConsultationState
    # Here now: subscribed to its consultation (presence there; a patient may not read, so is
    # never present on, the waiting room). A live check-in counts as a join: the patient
    # publishes it only once subscribed, before this endpoint listens to the consultation; a
    # replayed one waits for here_now (``presence_sync``), asked at start and after a reconnect.
    present: bool


class WaitingRoom:
    def __init__(
        self,
        sessions: SessionRegistry,
        hub: events.EventHub,
        *,
        user_id: str,
        department_id: str,
        max_consultations: int,
        wildcard: str | None,
    ) -> None:
        self._sessions = sessions
        self._hub = hub
        self._user_id = user_id
        self._department_id = department_id
        self._wildcard = wildcard
        # Without wildcard subscribe every followed consultation lists its 4 channels.
        self._max_consultations = (
            max_consultations if wildcard is not None else min(max_consultations, LISTED_CONSULTATIONS_MAX)
        )
        self._order: dict[str, int] = {}  # consultation ID -> check-in timetoken
        self.lock = asyncio.Lock()

    @property
    def queue(self) -> list[WaitingPatient]:
        waiting = [
            s.consultation
            for s in self._sessions.sessions.values()
            if not s.closed
            and s.consultation.state in WAITING_STATES
            and s.consultation.provider_id == self._user_id
        ]
        waiting.sort(key=lambda c: self._order.get(c.consultation_id, 0))
        return [
            WaitingPatient(
                c.consultation_id, c.patient_id, c.appointment_id, c.state, _present(c, c.patient_id)
            )
            for c in waiting
        ]

    def check_join(self, session: ConsultationSession) -> None:
        """Refused before anything is published: past the bound the join would have no signaling channel."""
        if (
            self._wildcard is not None
            and self._sessions.joined_count() >= MAX_JOINED_CONSULTATIONS
            and session.consultation.state in WILDCARD_STATES
        ):
            raise SessionError(
                "too-many-joined",
                f"this endpoint holds at most {MAX_JOINED_CONSULTATIONS} joined consultations at once",
            )

    async def replay(self, bus: Bus, room: str) -> None:
        """Open a session for each check-in in the waiting room's history that still waits
        (``waiting_room``: superseded, cancelled or ended ones are dropped). Under ``lock``."""
        replay = await waiting_check_ins(bus, self._user_id, room)
        for envelope in replay.undecodable:
            await self._message_locked(envelope, live=False)  # logged as a drop
        for message, envelope in replay.check_ins:
            if self._sessions.get(message.consultation_id) is not None:  # resumed from its state file
                await self._checked_in(message, envelope, live=False)
        unknown = [item for item in replay.check_ins if self._sessions.get(item[0].consultation_id) is None]
        for message, envelope in await still_waiting(bus, self._user_id, unknown):
            await self._checked_in(message, envelope, live=False)

    async def on_message(self, envelope: Envelope) -> None:
        async with self.lock:
            await self._message_locked(envelope, live=True)

    async def _message_locked(self, envelope: Envelope, *, live: bool) -> None:
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
            await self._cancelled_early(decoded, envelope, envelope.publisher)

    async def _cancelled_early(
        self, message: ConsultationCancelled, envelope: Envelope, publisher: str
    ) -> None:
        # An early cancel names no consultation: it is the publisher's (a patient's) own.
        cid = channels.consultation(self._user_id, publisher)
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
        await session.apply(Received(message, publisher, envelope.timetoken), envelope.channel)

    async def _checked_in(self, message: PatientCheckedIn, envelope: Envelope, *, live: bool) -> None:
        cid = message.consultation_id
        session = self._sessions.get(cid)
        if session is not None and not session.closed:
            await session.apply(
                Received(message, envelope.publisher or "", envelope.timetoken), envelope.channel
            )
            return
        if self._sessions.open_count() >= self._max_consultations:
            self._not_followed(
                cid, f"limit: this endpoint follows at most {self._max_consultations} consultations"
            )
            return
        try:
            await self._open(message, envelope, live=live)
        except Exception as exc:
            # The patient would wait in a queue nobody reads: say so, and leave nothing half-open.
            self._not_followed(cid, _reason(exc))
            stale = self._sessions.discard(cid)
            if stale is not None:
                await stale.aclose("not-followed")  # its state file goes too

    def _not_followed(self, consultation_id: str, reason: str) -> None:
        log.error("consultation not followed consultation=%s reason=%s", consultation_id, reason)
        self._hub.emit(events.ConsultationNotFollowed(consultation_id, reason))

    async def _open(self, message: PatientCheckedIn, envelope: Envelope, *, live: bool) -> None:
        cid = message.consultation_id
        consultation = Consultation.new(
            consultation_id=cid, user_id=self._user_id, role="provider", department_id=self._department_id
        )
        session = await self._sessions.new(consultation)
        self._order[cid] = envelope.timetoken
        await session.apply(Received(message, envelope.publisher or "", envelope.timetoken), envelope.channel)
        if session.consultation.state is not RULES[PatientCheckedIn].to_state:
            await session.aclose("stopped")  # refused (logged): nothing to follow
            self._sessions.discard(cid)
            return
        if live:
            # Its join on the consultation came before we listened there: the check-in stands for it.
            joined = PresenceEvent(cid, "join", envelope.publisher, None, envelope.timetoken)
            await session.apply(PresenceChanged(joined), envelope.channel)
        await session.start(catch_up=True)


def _reason(exc: Exception) -> str:
    """Why a consultation could not be followed, in words that name no PHI."""
    text = exception_reason(exc)
    return text if text != "-" else describe_exception(exc)


def _present(consultation: Consultation, user_id: str) -> bool:
    member = consultation.roster.member(user_id)
    return member is not None and member.present
