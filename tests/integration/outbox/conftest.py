"""Fixtures for the outbox: the real relay and real ``PubNubBus`` clients (the bus tests' fixtures),
real SQLite files in the test's directory, and outboxes closed at the end of every test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from telehealth_client.durable.at_rest import Sealer
from telehealth_client.durable.outbox import Outbox
from tests.support.bus import (
    CIPHER_KEY,
)
from tests.support.outbox import OutboxFactory, Results


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
