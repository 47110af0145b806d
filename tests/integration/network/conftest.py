"""The hospital network of these tests: a CONNECT proxy, TLS in front of the relay and the clinic
stand-in with a CA made for the test, and coturn with a TLS listener."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telehealth_devstack.stack import DevStack
from telehealth_devstack.turn import TurnServer
from tests.support.connect_proxy import ConnectProxy
from tests.support.consultation import nurse_stack
from tests.support.tls_front import ThrowawayCa, TlsFront


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with nurse_stack() as running:
        yield running


@pytest.fixture
async def ca(tmp_path: Path) -> ThrowawayCa:
    return await asyncio.to_thread(ThrowawayCa.make, tmp_path / "hospital-ca")


@pytest.fixture
async def relay_front(stack: DevStack, ca: ThrowawayCa) -> AsyncIterator[TlsFront]:
    """The relay over TLS, its certificate signed by ``ca``: PubNub as the agent sees it."""
    async with TlsFront(stack.relay.port, ca) as front:
        yield front


@pytest.fixture
async def clinic_front(stack: DevStack, ca: ThrowawayCa) -> AsyncIterator[TlsFront]:
    """The clinic stand-in over TLS, its certificate signed by ``ca``."""
    assert stack.clinic is not None
    async with TlsFront(stack.clinic.port, ca) as front:
        yield front


@pytest.fixture
async def proxy() -> AsyncIterator[ConnectProxy]:
    async with ConnectProxy() as running:
        yield running


@pytest.fixture
async def tls_turn() -> AsyncIterator[TurnServer]:
    async with TurnServer(tls=True) as running:
        yield running
