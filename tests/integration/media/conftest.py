"""Real coturn on loopback for the media tests, and TURN credentials for it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from telehealth_client.media.call import TurnConfig
from telehealth_devstack.turn import TurnServer, turn_rest_credentials

from ..consultation.conftest import log_lines, parts, stack  # noqa: F401 (fixtures for the call tests)


@pytest.fixture
async def turn() -> AsyncIterator[TurnServer]:
    async with TurnServer() as running:
        yield running


@pytest.fixture
async def tls_turn() -> AsyncIterator[TurnServer]:
    """coturn with a TLS listener too: ``tls_urls``, and ``ca_file`` for the clients to trust."""
    async with TurnServer(tls=True) as running:
        yield running


def turn_config(
    turn: TurnServer, user_id: str = "pat-1", *, expired: bool = False, tls: bool = False
) -> TurnConfig:
    """Credentials for ``turn``; with ``tls`` its ``turns:`` URL only, as a clinic on 443 hands out."""
    now = time.time() - 3600 if expired else None
    username, credential = turn_rest_credentials(turn.secret, user_id, 600, now=now)
    return TurnConfig(tuple(turn.tls_urls if tls else turn.urls), username, credential)
