"""Fixtures for the outbox: the real relay and real ``PubNubBus`` clients (the bus tests' fixtures),
real SQLite files in the test's directory, and outboxes closed at the end of every test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from telehealth_client.durable.at_rest import Sealer
from telehealth_client.durable.outbox import Outbox, Outgoing
from tests.integration.bus.conftest import (  # noqa: F401 (fixtures used by the tests here)
    CIPHER_KEY,
    PUBLISH_KEY,
    SECRET_KEY,
    SUBSCRIBE_KEY,
    BusFactory,
    Inbox,
    make_bus,
    relay,
    subscribed,
)
from tests.integration.consultation.conftest import LogLines, log_lines  # noqa: F401
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


@pytest.fixture
async def make_outbox(tmp_path: Path) -> AsyncIterator[OutboxFactory]:
    """Builds outboxes (default file: ``tmp_path/outbox.sqlite3``, default key: the bus tests' cipher
    key); every one is closed at the end."""
    built: list[Outbox] = []

    def build(
        results: Results | None = None,
        path: Path | None = None,
        sealer: Sealer | None = None,
        **options: Any,
    ) -> Outbox:
        outbox = Outbox(
            path or tmp_path / "outbox.sqlite3",
            sealer or Sealer(CIPHER_KEY, purpose="outbox"),
            on_sent=results.on_sent if results else None,
            on_failed=results.on_failed if results else None,
            **options,
        )
        built.append(outbox)
        return outbox

    yield build
    for outbox in reversed(built):
        await outbox.aclose()
