"""Routes the outbox's outcomes back to whoever queued each item.

The agent has one durable outbox (``outbox.Outbox``) for every consultation it takes part in and
for its emergencies; the outbox tells one pair of callbacks what was sent and what failed. The
router hands each outcome to the recipient registered for the item's consultation and kind (the
consultation's chat, the emergency desk). An outcome nobody is registered for (the chat already
closed) is logged by ID and dropped: the item itself is already settled in the outbox.

Public API: ``DeliveryRouter()``; ``register(consultation_id, kind, recipient) -> remover``;
``sent(item, timetoken)`` and ``failed(item, reason)`` (give these to the ``Outbox``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from telehealth_client.logs import describe_exception

if TYPE_CHECKING:
    from telehealth_client.durable.outbox import Outgoing

log = logging.getLogger(__name__)


class Recipient(Protocol):
    def delivered(self, item: Outgoing, timetoken: int) -> None: ...

    def undeliverable(self, item: Outgoing, reason: str) -> None: ...


class DeliveryRouter:
    def __init__(self) -> None:
        self._routes: dict[tuple[str, str], Recipient] = {}

    def register(self, consultation_id: str, kind: str, recipient: Recipient) -> Callable[[], None]:
        key = (consultation_id, kind)
        self._routes[key] = recipient

        def remove() -> None:
            if self._routes.get(key) is recipient:
                del self._routes[key]

        return remove

    def sent(self, item: Outgoing, timetoken: int) -> None:
        recipient = self._routes.get((item.consultation_id, item.kind))
        if recipient is None:
            log.debug("delivery outcome unrouted id=%s kind=%s outcome=sent", item.id, item.kind)
            return
        try:
            recipient.delivered(item, timetoken)
        except Exception as exc:  # the outbox's sender must go on
            log.error("delivery recipient failed id=%s error=%s", item.id, describe_exception(exc))

    def failed(self, item: Outgoing, reason: str) -> None:
        recipient = self._routes.get((item.consultation_id, item.kind))
        if recipient is None:
            log.warning("delivery failed unrouted id=%s kind=%s reason=%s", item.id, item.kind, reason)
            return
        try:
            recipient.undeliverable(item, reason)
        except Exception as exc:
            log.error("delivery recipient failed id=%s error=%s", item.id, describe_exception(exc))
