"""Fixtures for the local API's tests: real agents on the development stack
(``tests.support.api``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from telehealth_devstack.stack import DevStack
from tests.support import api_fixtures
from tests.support.api import KIOSK, PROVIDER, SPECIALIST, WAIT, Agents, RunningAgent

# The shared fixtures, bound here so that pytest finds them.
http = api_fixtures.http
agents = api_fixtures.agents


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(PROVIDER, SPECIALIST), kiosks=(KIOSK,)) as running:
        yield running


@pytest.fixture
async def kiosk(agents: Agents) -> RunningAgent:
    return await agents.start(KIOSK)


@pytest.fixture
async def provider(agents: Agents) -> RunningAgent:
    running = await agents.start(PROVIDER)
    bus = running.agent.bus
    if bus is not None and not running.agent.connected.is_set():
        await asyncio.wait_for(running.agent.connected.wait(), WAIT)
    return running
