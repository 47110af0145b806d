"""Which escalations a provider's cart alerts to: each once, and only once it is confirmed open.

An ``EMERGENCY_ESCALATION`` notification arrives on the provider's notification channel, which
others than staff may write (a patient may): so the cart alerts only once the escalation is
confirmed open on the department's emergency channel, which only staff may write. A notification
that overtook its escalation (or came while the desk was starting) is held, bounded, and alerted
when the desk sees the escalation. At start, notifications read while the cart was off are read
from history and treated the same way. What was alerted, held and read is kept on disk
(``AlertLedger``), so a restart alerts nothing twice. Without storage (no desk can confirm
anything) a notification is alerted as it comes.

Public API: ``EmergencyAlerts(hub)``; ``await load(state_dir)``; ``notified(notification, desk)``;
``escalation_seen(escalation)`` (the desk's listener); ``read(timetoken)`` (a notification read);
``await catch_up(desk, bus, channel)``; ``alerted``; ``await aclose()``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

from telehealth_client import events
from telehealth_client.emergency.alert_ledger import AlertLedger
from telehealth_client.emergency.desk import EmergencyDesk, Escalation
from telehealth_client.protocol.messages import EmergencyNotification, decode
from telehealth_client.pubsub.bus import Bus

log = logging.getLogger(__name__)

MAX_UNCONFIRMED_ALERTS: Final = 64
# At start: at most this many unread notifications are read (the bus pages history itself).
MISSED_NOTIFICATIONS_READ: Final = 1000


class EmergencyAlerts:
    def __init__(self, hub: events.EventSink) -> None:
        self._hub = hub
        self._alerted: set[str] = set()  # escalation IDs this provider was alerted to
        self._ledger: AlertLedger | None = None  # the same, and the notifications read, on disk
        # Notifications whose escalation the emergency channel has not shown yet (bounded).
        self._unconfirmed: dict[str, str] = {}

    @property
    def alerted(self) -> frozenset[str]:
        return frozenset(self._alerted)

    async def load(self, state_dir: Path) -> None:
        self._ledger = AlertLedger(state_dir)
        await self._ledger.load()
        self._alerted.update(self._ledger.alerted_ids)
        self._unconfirmed.update(self._ledger.held)

    async def aclose(self) -> None:
        if self._ledger is not None:
            await self._ledger.aclose()

    def read(self, timetoken: int) -> None:
        """A notification was read: a restart starts after it."""
        if self._ledger is not None:
            self._ledger.advance(timetoken)

    def notified(self, notification: EmergencyNotification, desk: EmergencyDesk | None) -> None:
        """Alert once the escalation is confirmed open on the department's emergency channel;
        not confirmed yet (the notification overtook the escalation, or the desk is still
        starting): held, and alerted when the desk sees it."""
        escalation_id = notification.escalation_id
        if escalation_id in self._alerted:
            return  # the sender's outbox may publish a notification twice
        if self._ledger is None:
            # No desk will ever confirm it on this endpoint (no storage): alert on the notification.
            self._alert(escalation_id, notification.priority)
            return
        escalation = None if desk is None else desk.get(escalation_id)
        if escalation is None:
            self._hold(escalation_id, notification.priority)
        elif escalation.status == "active":
            self._alert(escalation_id, notification.priority)
        else:  # a late or repeated notification
            log.info("emergency notification ignored escalation=%s reason=resolved already", escalation_id)

    def escalation_seen(self, escalation: Escalation) -> None:
        priority = self._unconfirmed.pop(escalation.id, None)
        if priority is None:
            return
        if self._ledger is not None:
            self._ledger.hold(dict(self._unconfirmed))
        if escalation.status == "active" and escalation.id not in self._alerted:
            self._alert(escalation.id, priority)

    async def catch_up(self, desk: EmergencyDesk, bus: Bus, channel: str) -> None:
        """Escalations notified on ``channel`` while this cart was off (or before it read them)
        and still open: alerted now, each once (PROTOCOL.md, "Emergency"). The desk has read the
        department's channel by now, so it knows which are open; one it does not know yet is held
        for it, as a live notification is."""
        ledger = self._ledger
        assert ledger is not None
        for escalation_id in list(self._unconfirmed):  # held before a restart
            escalation = desk.get(escalation_id)
            if escalation is not None:
                self.escalation_seen(escalation)
        unread = await bus.history(channel, since=ledger.last_read or None, limit=MISSED_NOTIFICATIONS_READ)
        for envelope in unread:
            decoded = decode(envelope.channel, envelope.message, envelope.publisher)
            if isinstance(decoded, EmergencyNotification):
                self.notified(decoded, desk)
        if unread:
            ledger.advance(unread[-1].timetoken)  # oldest first

    def _hold(self, escalation_id: str, priority: str) -> None:
        log.info("emergency alert held escalation=%s reason=not on the emergency channel yet", escalation_id)
        self._unconfirmed[escalation_id] = priority
        while len(self._unconfirmed) > MAX_UNCONFIRMED_ALERTS:
            del self._unconfirmed[next(iter(self._unconfirmed))]
        if self._ledger is not None:
            self._ledger.hold(dict(self._unconfirmed))  # a restart still waits for them

    def _alert(self, escalation_id: str, priority: str) -> None:
        self._alerted.add(escalation_id)
        if self._ledger is not None:
            self._ledger.record_alert(escalation_id)
        log.warning("emergency alert received escalation=%s priority=%s", escalation_id, priority)
        self._hub.emit(events.EmergencyAlert(escalation_id, priority))
