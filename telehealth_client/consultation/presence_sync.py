"""Who is here now, asked rather than heard: a provider's consultations after start and reconnect.

Presence reaches a subscriber only as join and leave events from the moment it subscribed, so a
cart started after a patient checked in would show that patient away, and a cart whose connection
dropped long enough for PubNub's queue to lose a leave would show a gone patient here. So the
endpoint asks here_now for the channel of every consultation it follows once it has replayed its
waiting room, and again each time its bus reconnects; each session applies the answer, and a
presence event that arrived after the question wins over it (``ConsultationSession.sync_presence``).
A failed question is logged and the events go on as before.

Public API: ``PresenceSync(bus, sessions)``; ``await sync()``; ``follow_reconnects()`` (a sync
after each reconnect, in a task it owns); ``await aclose()``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from telehealth_client.consultation.provider_sessions import SessionRegistry
from telehealth_client.logs import describe_exception
from telehealth_client.pubsub.bus import Bus, BusError, ConnectionStatus, StatusChange
from telehealth_client.tasks import OwnedTasks

log = logging.getLogger(__name__)


class PresenceSync:
    def __init__(self, bus: Bus, sessions: SessionRegistry) -> None:
        self._bus = bus
        self._sessions = sessions
        self._tasks = OwnedTasks()
        self._remove_listener: Callable[[], None] | None = None

    async def sync(self) -> None:
        """Ask here_now about every open consultation and hand each session its answer."""
        followed = [s for s in self._sessions.sessions.values() if not s.closed and s.bus is self._bus]
        if not followed:
            return
        marks = {session.consultation_id: session.presence_mark for session in followed}
        try:
            present = await self._bus.here_now(marks)
        except BusError as exc:
            log.warning("presence not asked consultations=%d reason=%s", len(marks), exc.reason)
            return
        for session in followed:
            cid = session.consultation_id
            await session.sync_presence(present.get(cid, frozenset()), marks[cid])
        log.info("presence asked consultations=%d", len(marks))

    def follow_reconnects(self) -> None:
        if self._remove_listener is None:
            self._remove_listener = self._bus.add_status_listener(self._on_status)

    def _on_status(self, change: StatusChange) -> None:
        # caught_up_from: a reconnect (not the first connect), so presence events may be lost.
        if change.status is ConnectionStatus.CONNECTED and change.caught_up_from is not None:
            self._tasks.spawn(self._sync_logged(), "presence-sync")

    async def _sync_logged(self) -> None:
        try:
            await self.sync()
        except Exception as exc:  # the events go on; the next reconnect asks again
            log.error("presence sync failed error=%s", describe_exception(exc))

    async def aclose(self) -> None:
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        await self._tasks.cancel_all()
