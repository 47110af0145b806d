"""The provider's notification channel and the consultations of others it is invited to.

An invitation (``CONSULTATION_INVITE`` on the notification channel) is kept by consultation ID and
emits ``events.InvitationReceived``; the notification channel also brings emergency alerts (to
``EmergencyAlerts``) and goes to every ``notification_listeners`` callable. ``accept`` swaps the
standing token for one naming the consultation, rebuilds the consultation from its provider's
latest ``PROVIDER_JOINED`` in history and joins (the roster only). When that session ends, or the
accept fails, the standing token returns; a denial of the invited token closes it.

Public API: ``InvitedSide(sessions, token, bus, hub, alerts, desk, user_id=...,
department_id=..., auditor=...)``;
``invitations``, ``notification_listeners``, ``await on_notification(envelope)``,
``await accept(consultation_id)``; the session hooks ``closing(session, reason)``,
``await closed(session)``, and ``access_denied()``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from telehealth_client import events
from telehealth_client.audit.auditor import Auditor
from telehealth_client.consultation.lifecycle import Consultation
from telehealth_client.consultation.provider_sessions import SessionRegistry
from telehealth_client.consultation.provider_token import ProviderToken
from telehealth_client.consultation.session import ConsultationSession, SessionError, now
from telehealth_client.consultation.waiting_room import WAITING_ROOM_HISTORY
from telehealth_client.emergency.alerts import EmergencyAlerts
from telehealth_client.emergency.desk import EmergencyDesk
from telehealth_client.logs import describe_exception
from telehealth_client.protocol.messages import (
    ConsultationInvite,
    ConsultationState,
    Drop,
    EmergencyNotification,
    ProviderJoined,
    decode,
)
from telehealth_client.pubsub.bus import Bus, Envelope

log = logging.getLogger(__name__)

NotificationListener = Callable[[Envelope], Awaitable[None] | None]


class InvitedSide:
    def __init__(
        self,
        sessions: SessionRegistry,
        token: ProviderToken,
        bus: Bus,
        hub: events.EventHub,
        alerts: EmergencyAlerts,
        desk: Callable[[], EmergencyDesk | None],
        *,
        user_id: str,
        department_id: str,
        auditor: Auditor | None,
    ) -> None:
        self._sessions = sessions
        self._token = token
        self._bus = bus
        self._hub = hub
        self._alerts = alerts
        self._desk = desk  # the endpoint's emergency desk, once started
        self._user_id = user_id
        self._department_id = department_id
        self._auditor = auditor
        self.invitations: dict[str, ConsultationInvite] = {}
        self.notification_listeners: list[NotificationListener] = []

    async def on_notification(self, envelope: Envelope) -> None:
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
            self._alerts.notified(decoded, self._desk())
        if self._desk() is not None:
            self._alerts.read(envelope.timetoken)  # read: a restart starts after it
        for listener in list(self.notification_listeners):
            try:
                result = listener(envelope)
                if result is not None:
                    await result
            except Exception as exc:
                log.error("notification listener failed error=%s", describe_exception(exc))

    async def accept(self, consultation_id: str) -> ConsultationSession:
        """Join a consultation we were invited to: its token, its state from history, PROVIDER_JOINED."""
        if consultation_id not in self.invitations:
            raise SessionError("not-invited", "no invitation to that consultation was received")
        await self._token.invited(consultation_id)
        try:
            consultation = await self._rebuild(consultation_id)
            session = await self._sessions.new(consultation)
            await session.start(catch_up=True)
            if session.closed:
                raise SessionError("ended", "the consultation ended before the invitation was accepted")
            await session.act(ProviderJoined(provider_id=self._user_id, timestamp=now()))
            if self._auditor is not None:
                await self._auditor.session_started(consultation_id)
        except BaseException:
            self._sessions.discard(consultation_id)
            await self._token.standing()
            raise
        return session

    async def _rebuild(self, consultation_id: str) -> Consultation:
        """Where to replay an invited consultation from: its provider's latest PROVIDER_JOINED."""
        base = Consultation.new(
            consultation_id=consultation_id,
            user_id=self._user_id,
            role="provider",
            department_id=self._department_id,
            state=ConsultationState.CHECKED_IN,
        )
        joined = 0
        for envelope in await self._bus.history(consultation_id, limit=WAITING_ROOM_HISTORY):
            decoded = decode(envelope.channel, envelope.message, envelope.publisher)
            if isinstance(decoded, ProviderJoined) and decoded.provider_id == base.provider_id:
                joined = envelope.timetoken
        if not joined:
            raise SessionError("not-started", "the consultation's provider has not joined it")
        return replace(base, last_timetoken=joined - 1, opened_timetoken=joined)

    def _invited(self, session: ConsultationSession) -> bool:
        return session.consultation.provider_id != self._user_id

    def closing(self, session: ConsultationSession, reason: str) -> None:
        if self._invited(session):
            # Our invitation is over and its token about to be revoked: the 403s that follow until
            # the standing token is back are expected, not something to refresh or warn about.
            self._token.retire()

    async def closed(self, session: ConsultationSession) -> None:
        if self._invited(session) and not self._token.stopping:
            # An invited consultation is over for us: back to the standing token.
            self.invitations.pop(session.consultation_id, None)
            try:
                await self._token.standing()
            except Exception as exc:
                log.error("standing token not restored error=%s", describe_exception(exc))

    def access_denied(self) -> None:
        """The invited token was denied for good: its consultations are over for us."""
        for session in self._sessions.sessions.values():
            if self._invited(session):
                session.close_soon("access-denied")
