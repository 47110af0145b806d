"""Fixtures for the local API's tests: real agents on the development stack
(``tests.support.api``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from telehealth_devstack.stack import DevStack
from tests.support.api import KIOSK, PROVIDER, SPECIALIST, WAIT, Agents, RunningAgent


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(PROVIDER, SPECIALIST), kiosks=(KIOSK,)) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
        yield session


@pytest.fixture
async def agents(stack: DevStack, tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[Agents]:
    started = Agents(stack, tmp_path, http)
    try:
        yield started
    finally:
        await started.aclose()


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
