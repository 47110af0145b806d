"""Fixtures for the relay tests: a started relay on a manual clock, and real SDK clients on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from pubnub.pubnub_asyncio import PubNubAsyncio

from telehealth_devstack.relay import ManualClock, Relay
from telehealth_devstack.relay.client import sdk_client
from tests.support.relay import ClientFactory


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
    clients: list[PubNubAsyncio] = []

    def make(user_id: str, **options: Any) -> PubNubAsyncio:
        client = sdk_client(relay, user_id=user_id, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for raw requests (CORS, malformed input, many long-polls)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session
