"""The fixtures of tests that drive real agents through their local API (``tests.support.api``):
``http``, an aiohttp client session, and ``agents``, the ``Agents`` a test starts on its ``stack``
(the requesting package's own fixture), all closed at the test's end. A conftest or test module
takes them by importing them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from telehealth_devstack.stack import DevStack
from tests.support.api import Agents

# One request's whole budget: generous, for a shared 2-core machine.
HTTP_WAIT = 30.0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_WAIT)) as session:
        yield session


@pytest.fixture
async def agents(stack: DevStack, tmp_path: Path, http: aiohttp.ClientSession) -> AsyncIterator[Agents]:
    started = Agents(stack, tmp_path, http)
    try:
        yield started
    finally:
        await started.aclose()
