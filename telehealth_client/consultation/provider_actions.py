"""What the provider does to its own consultations: queue updates, join, call, start, wrap-up,
end, cancel, invite, remove, assign a nurse.

Each action goes through its session (``ConsultationSession.act``: the lifecycle checks it first,
so a refused one publishes nothing). Whoever the provider lets in (an invited provider, an assigned
nurse) is on disk in ``GuestAccess`` before the clinic lets them in, so a crash in between still
revokes them. With media, a join prepares the call (aiortc's import is not waited for when the
provider calls), and the patient's media moves the consultation to in-progress.

Public API: ``OwnConsultations(sessions, room, connect, hub, user_id=..., media=..., auditor=...,
guests=...)``, one coroutine per action (see ``ProviderEndpoint``); ``guest_revoked_reporter(hub,
auditor)``, the callback ``GuestAccess`` reports each revocation to.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from telehealth_client import events
from telehealth_client.audit.auditor import Auditor
from telehealth_client.connector import Connector
from telehealth_client.consultation.guest_access import GuestAccess, OnRevoked
from telehealth_client.consultation.lifecycle import RULES, plan, summary_duration
from telehealth_client.consultation.provider_room import WaitingRoom
from telehealth_client.consultation.provider_sessions import SessionRegistry
from telehealth_client.consultation.session import ConsultationSession, SessionError, now
from telehealth_client.logs import describe_exception
from telehealth_client.protocol.channels import validate_id
from telehealth_client.protocol.messages import (
    CancelReason,
    ConsultationCancelled,
    ConsultationEnded,
    ConsultationStarted,
    InvitedRole,
    ProviderInvited,
    ProviderJoined,
    ProviderRemoved,
    QueueUpdate,
    Summary,
    WrapUpStarted,
)

if TYPE_CHECKING:
    from telehealth_client.media.call_options import MediaOptions
    from telehealth_client.media.consultation_call import ConsultationCall

log = logging.getLogger(__name__)


def guest_revoked_reporter(hub: events.EventHub, auditor: Auditor | None) -> OnRevoked:
    async def revoked(consultation_id: str, user_id: str, count: int) -> None:
        if auditor is not None:
            await auditor.safely("token_revoked", consultation_id, user_id, count)
        hub.emit(events.GuestAccessRevoked(consultation_id, user_id, count))

    return revoked


class OwnConsultations:
    def __init__(
        self,
        sessions: SessionRegistry,
        room: WaitingRoom,
        connect: Connector,
        hub: events.EventHub,
        *,
        user_id: str,
        media: MediaOptions | None,
        auditor: Auditor | None,
        guests: GuestAccess | None,
    ) -> None:
        self._sessions = sessions
        self._room = room
        self._connect = connect  # its clinic is asked for only when an action needs it
        self._hub = hub
        self._user_id = user_id
        self._media = media
        self._auditor = auditor
        self._guests = guests
        self._calls: dict[str, ConsultationCall] = {}
        # Consultations being started by their media: video and audio each report theirs, as two
        # tasks, and the second must not try the same start (the lifecycle would refuse it).
        self._starting: set[str] = set()

    async def send_queue_updates(self, minutes_per_patient: int = 10) -> int:
        """One ``QUEUE_UPDATE`` to each waiting patient; how many were sent."""
        sent = 0
        for position, patient in enumerate(self._room.queue, start=1):
            update = QueueUpdate(
                title="Queue Update",
                body=f"You are number {position} in the queue.",
                priority="normal",
                timestamp=now(),
                consultation_id=patient.consultation_id,
                position=position,
                estimated_wait_minutes=(position - 1) * minutes_per_patient,
            )
            await self._sessions.session(patient.consultation_id).act(update)
            sent += 1
        return sent

    async def join(self, consultation_id: str) -> ConsultationSession:
        session = self._sessions.session(consultation_id)
        self._room.check_join(session)
        await session.act(ProviderJoined(provider_id=self._user_id, timestamp=now()))
        if self._auditor is not None:
            await self._auditor.session_started(consultation_id)
        if self._media is not None:
            await self._call_for(session)  # warm: the call does not wait for aiortc's import
        return session

    async def call(self, consultation_id: str) -> ConsultationCall:
        """Call the consultation's patient: returns once the offer is out; the consultation moves
        to in-progress when the patient's media arrives (video, or audio alone)."""
        session = self._sessions.session(consultation_id)
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
            session is None
            or session.closed
            or consultation_id in self._starting
            or session.consultation.state not in RULES[ConsultationStarted].from_states
        ):
            return
        self._starting.add(consultation_id)
        try:
            await self.start_consultation(consultation_id)
        except Exception as exc:
            log.warning(
                "consultation not started on media consultation=%s error=%s",
                consultation_id,
                describe_exception(exc),
            )
        finally:
            self._starting.discard(consultation_id)

    async def start_consultation(self, consultation_id: str) -> None:
        await self._sessions.session(consultation_id).act(
            ConsultationStarted(provider_id=self._user_id, timestamp=now())
        )

    async def wrap_up(self, consultation_id: str) -> None:
        await self._sessions.session(consultation_id).act(
            WrapUpStarted(provider_id=self._user_id, timestamp=now())
        )

    async def end(self, consultation_id: str, *, follow_up_required: bool) -> Summary:
        session = self._sessions.session(consultation_id)
        ended_at = now()
        joined_at = session.consultation.provider_joined_at or ended_at
        summary = Summary(
            duration=summary_duration(joined_at, ended_at), follow_up_required=follow_up_required
        )
        await session.act(ConsultationEnded(provider_id=self._user_id, summary=summary, timestamp=ended_at))
        return summary

    async def cancel(self, consultation_id: str, reason: CancelReason = "no-show") -> None:
        await self._sessions.session(consultation_id).act(
            ConsultationCancelled(cancelled_by=self._user_id, reason=reason, timestamp=now())
        )

    async def invite(self, consultation_id: str, provider_id: str, role: InvitedRole) -> None:
        session = self._sessions.session(consultation_id)
        provider_id = validate_id(provider_id, "invitedProviderId")
        message = ProviderInvited(
            invited_provider_id=provider_id, invited_by=self._user_id, role=role, timestamp=now()
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
        session = self._sessions.session(consultation_id)
        provider_id = validate_id(provider_id, "providerId")
        await session.act(ProviderRemoved(provider_id=provider_id, removed_by=self._user_id, timestamp=now()))
        assert self._guests is not None  # the session needed the clinic's token
        return await self._guests.revoke(consultation_id, provider_id)

    async def assign_nurse(self, consultation_id: str, nurse_id: str) -> None:
        """The clinic records the consultation as assigned to ``nurse_id`` (a nurse of this
        department), who may then ask for a token naming it, until the consultation ends."""
        session = self._sessions.session(consultation_id)
        nurse_id = validate_id(nurse_id, "nurseId")
        if session.consultation.provider_id != self._user_id:
            raise SessionError("not-own-consultation", "only the consultation's provider assigns a nurse")
        if session.consultation.state.terminal:
            raise SessionError("ended", "the consultation is over")
        await self._admit(consultation_id, nurse_id)
        await self._connect.clinic.assign_nurse(consultation_id, nurse_id)
        if self._auditor is not None:
            await self._auditor.provider_added(consultation_id, nurse_id, "nurse")

    async def _admit(self, consultation_id: str, user_id: str) -> None:
        """On disk before the clinic lets ``user_id`` in: a crash in between still revokes it."""
        assert self._guests is not None  # a session of our own needed the clinic's token
        await self._guests.admit(consultation_id, user_id)
