"""Fixtures for the provider console's tests: the development stack (which serves the console), a
kiosk agent with media and its local API, and the console in headless Chromium."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from telehealth_devstack.stack import DevStack
from tests.support.api import KIOSK, PROVIDER, SPECIALIST, WAIT, Agents, RunningAgent
from tests.support.console import open_console
from tests.support.devstack_cli import Devstack, started_devstacks
from tests.support.media import devices_environment
from tests.support.technician_page import TechnicianPage


@pytest.fixture
async def console_stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(PROVIDER, SPECIALIST), kiosks=(KIOSK,)) as running:
        yield running


@pytest.fixture
async def kiosk_with_media(console_stack: DevStack, tmp_path: Path) -> AsyncIterator[RunningAgent]:
    """A kiosk agent as ``telehealth-agent run`` builds it, its media child on test devices."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
        agents = Agents(console_stack, tmp_path, session)
        try:
            yield await agents.start(
                KIOSK, TELEHEALTH_MEDIA="true", **devices_environment(tmp_path, "patient")
            )
        finally:
            await agents.aclose()


@pytest.fixture
async def console_page(console_stack: DevStack) -> AsyncIterator[TechnicianPage]:
    page = await open_console(console_stack.console_url)
    try:
        yield page
    finally:
        await page.close()


@pytest.fixture
async def started() -> AsyncIterator[list[Devstack]]:
    """Every ``telehealth-agent devstack`` a test starts; any still running afterwards is killed."""
    async for processes in started_devstacks():
        yield processes
