"""The outbox tests' helpers: what an outbox reported, and chat items to put in it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from telehealth_client.durable.outbox import DenialHandler, Outbox, Outgoing
from telehealth_client.pubsub.bus import Envelope
from tests.support.bus import Inbox
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


async def sending(
    make_outbox: OutboxFactory,
    bus: Any,
    *items: Outgoing,
    denials: DenialHandler | None = None,
    **options: Any,
) -> tuple[Outbox, Results]:
    """An outbox (``options``: ``make_outbox``'s) opened with ``items`` put in it, in order, then
    sending them on ``bus`` (``denials``: its Access Manager denial handler); what it reports goes
    to the ``Results``."""
    results = Results()
    outbox = make_outbox(results, **options)
    await outbox.open()
    for item in items:
        await outbox.put(item)
    outbox.attach(bus, denials=denials)
    return outbox, results


async def everything_after(sentinel_bus: Any, inbox: Inbox, already: int) -> list[Envelope]:
    """What ``inbox`` got once a sentinel published after the outbox drained has arrived too.

    The channel is ordered: any second copy the outbox published would have arrived before it.
    """
    await sentinel_bus.publish(CHANNEL, {"type": "sentinel"})
    received = await inbox.wait_for(already + 1, within=WAIT)
    assert received[-1].message == {"type": "sentinel"}
    return received[:-1]


def ids(envelopes: list[Envelope]) -> list[str]:
    return [envelope.message["id"] for envelope in envelopes]
