"""Real coturn on loopback for the media tests, and TURN credentials for it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from telehealth_client.devstack.turn import TurnServer, turn_rest_credentials
from telehealth_client.media.call import TurnConfig

from ..consultation.conftest import log_lines, parts, stack  # noqa: F401 (fixtures for the call tests)


@pytest.fixture
async def turn() -> AsyncIterator[TurnServer]:
    async with TurnServer() as running:
        yield running


def turn_config(turn: TurnServer, user_id: str = "pat-1", *, expired: bool = False) -> TurnConfig:
    now = time.time() - 3600 if expired else None
    username, credential = turn_rest_credentials(turn.secret, user_id, 600, now=now)
    return TurnConfig(tuple(turn.urls), username, credential)
