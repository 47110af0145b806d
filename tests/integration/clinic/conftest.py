"""Fixtures that start the real development parts: coturn, the relay and the clinic stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from telehealth_devstack.clinic import Clinic
from telehealth_devstack.relay import Relay
from telehealth_devstack.turn import TurnServer
from tests.support.clinic import (
    PUBLISH_KEY,
    SECRET_KEY,
    SUBSCRIBE_KEY,
    ClientFactory,
    ClinicApi,
    ClinicFactory,
)
from tests.support.relay import SdkClients


@pytest.fixture
async def turn_server() -> AsyncIterator[TurnServer]:
    async with TurnServer() as server:
        yield server


@pytest.fixture
async def clinic_relay() -> AsyncIterator[Relay]:
    """The development relay, Access Manager not enforced (the clinic mints tokens on it)."""
    async with Relay(publish_key=PUBLISH_KEY, subscribe_key=SUBSCRIBE_KEY, secret_key=SECRET_KEY) as relay:
        yield relay


@pytest.fixture
async def enforcing_relay(clinic_relay: Relay) -> AsyncIterator[Relay]:
    """``clinic_relay`` with Access Manager enforced: a token's power is what the test sees."""
    clinic_relay.enforce_access = True
    yield clinic_relay
    clinic_relay.enforce_access = False


@pytest.fixture
async def make_client(clinic_relay: Relay) -> AsyncIterator[ClientFactory]:
    """Real PubNub SDK clients on the relay (no subscribe loop); all stopped afterwards."""
    clients = SdkClients(clinic_relay, enable_subscribe=False)
    yield clients
    await clients.aclose()


@pytest.fixture
async def clinic(make_clinic: ClinicFactory, clinic_relay: Relay) -> Clinic:
    """The clinic stand-in minting tokens on a running relay."""
    return await make_clinic(relay_origin=clinic_relay.origin)


@pytest.fixture
async def offline_clinic(make_clinic: ClinicFactory) -> Clinic:
    """A clinic whose PubNub is down: for everything that must not need PubNub."""
    return await make_clinic()


@pytest.fixture
async def http() -> AsyncIterator[ClinicApi]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield ClinicApi(session)
