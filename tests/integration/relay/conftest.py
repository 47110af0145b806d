"""Fixtures for the relay tests: a started relay on a manual clock, and real SDK clients on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from telehealth_devstack.relay import ManualClock, Relay
from tests.support.relay import ClientFactory, SdkClients


@pytest.fixture
def relay_clock() -> ManualClock:
    """The relay's clock for tokens and presence; tests move it instead of sleeping."""
    return ManualClock()


@pytest.fixture
async def relay(relay_clock: ManualClock) -> AsyncIterator[Relay]:
    """A started relay (Access Manager off; set ``relay.enforce_access = True`` to turn it on)."""
    async with Relay(clock=relay_clock) as running:
        yield running


@pytest.fixture
async def make_client(relay: Relay) -> AsyncIterator[ClientFactory]:
    """``make_client(user_id, token=..., cipher_key=..., with_secret_key=..., enable_subscribe=...)``.

    Builds PubNubAsyncio clients pointed at the relay; all are stopped after the test.
    """
    clients = SdkClients(relay)
    yield clients
    await clients.aclose()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for raw requests (CORS, malformed input, many long-polls)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session
