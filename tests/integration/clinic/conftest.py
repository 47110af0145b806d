"""Fixtures that start the real development parts: coturn and the clinic stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from telehealth_client.devstack.turn import TurnServer


@pytest.fixture
async def turn_server() -> AsyncIterator[TurnServer]:
    async with TurnServer() as server:
        yield server
