"""The outbox tests' helpers: what an outbox reported, and chat items to put in it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from telehealth_client.durable.outbox import Outbox, Outgoing
from tests.support.recorder import Recorder

WAIT = 15.0


CHANNEL = "consultation.dr-lee.pat-1"


SENDER = "pat-1"


class Results:
    """What the outbox reported: each sent item with its timetoken, each failed item with its reason."""

    def __init__(self) -> None:
        self.sent: list[tuple[Outgoing, int]] = []
        self.failed: list[tuple[Outgoing, str]] = []
        self._recorder = Recorder()

    def on_sent(self, item: Outgoing, timetoken: int) -> None:
        self.sent.append((item, timetoken))
        self._recorder.changed()

    def on_failed(self, item: Outgoing, reason: str) -> None:
        self.failed.append((item, reason))
        self._recorder.changed()

    async def wait_for(self, count: int, within: float = WAIT) -> None:
        """Until ``count`` items were reported, sent or failed."""
        await self._recorder.until(lambda: len(self.sent) + len(self.failed) >= count, within)


def chat(text: str, channel: str = CHANNEL, consultation_id: str = CHANNEL, **fields: Any) -> Outgoing:
    """A chat message as the chat module puts it: the outbox id is the message's own id."""
    item_id = str(uuid.uuid4())
    message = {"type": "chat", "id": item_id, "senderId": SENDER, "senderRole": "patient", "text": text}
    return Outgoing(item_id, consultation_id, channel, message, **fields)


OutboxFactory = Callable[..., Outbox]
