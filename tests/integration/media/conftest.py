"""Real coturn on loopback for the media tests, and TURN credentials for it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from telehealth_devstack.turn import TurnServer


@pytest.fixture
async def turn() -> AsyncIterator[TurnServer]:
    async with TurnServer() as running:
        yield running


@pytest.fixture
async def tls_turn() -> AsyncIterator[TurnServer]:
    """coturn with a TLS listener too: ``tls_urls``, and ``ca_file`` for the clients to trust."""
    async with TurnServer(tls=True) as running:
        yield running
