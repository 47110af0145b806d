"""Fixtures for the token keeper: the real relay enforcing Access Manager on a manual clock, the
real clinic stand-in minting tokens on it (the clinic's fixtures), and real PubNubBus clients.

One ``SharedClock`` drives both the relay's token expiry and the keeper's schedule, so a test moves
time past a refresh point or an expiry by calling ``advance`` instead of waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_client.security.tokens import RefreshPolicy, TokenKeeper, TokenRequest
from telehealth_devstack.clinic import Clinic
from telehealth_devstack.relay import Relay
from tests.support.bus import BusKeys
from tests.support.clinic import (
    CART_CREDENTIALS,
    KIOSK_CREDENTIAL,
    PUBLISH_KEY,
    SECRET_KEY,
    SUBSCRIBE_KEY,
    ClinicFactory,
)
from tests.support.logs import attached
from tests.support.tokens import (
    CIPHER_KEY,
    CONSULTATION,
    PATIENT,
    PATIENT_TTL_MINUTES,
    PROVIDER,
    BusFactory,
    KeeperFactory,
    NoJitter,
    RecordingSource,
    SharedClock,
    TokenEvents,
    TokenLog,
    set_consent,
)


@pytest.fixture
def clock() -> SharedClock:
    return SharedClock()


@pytest.fixture
async def relay(clock: SharedClock) -> AsyncIterator[Relay]:
    """The relay refusing what a token does not allow, including a token its clock says has expired."""
    async with Relay(
        publish_key=PUBLISH_KEY,
        subscribe_key=SUBSCRIBE_KEY,
        secret_key=SECRET_KEY,
        enforce_access=True,
        clock=clock,
    ) as running:
        yield running


@pytest.fixture
async def clinic(make_clinic: ClinicFactory, relay: Relay, clock: SharedClock) -> Clinic:
    """The clinic stand-in on the relay and its clock, granting patients 1-minute tokens; PATIENT has
    given telehealth consent (recorded by the kiosk, as at a check-in)."""
    started = await make_clinic(
        relay_origin=relay.origin, token_ttl_minutes={"patient": PATIENT_TTL_MINUTES}, clock=clock
    )
    await set_consent(started, granted=True)
    return started


@pytest.fixture
def bus_keys() -> BusKeys:
    """The buses of ``make_bus`` (tests/integration/conftest.py) are on this folder's relay, with no
    token of their own."""
    return BusKeys(PUBLISH_KEY, SUBSCRIBE_KEY, CIPHER_KEY)


@pytest.fixture
async def kiosk(clinic: Clinic) -> AsyncIterator[RecordingSource]:
    client = ClinicClient(clinic.url, KIOSK_CREDENTIAL)
    yield RecordingSource(client)
    await client.aclose()


@pytest.fixture
async def provider_bus(clinic: Clinic, make_bus: BusFactory) -> PubNubBus:
    """dr-lee's bus with its standing 60-minute token: it publishes into the patient's consultation."""
    cart = ClinicClient(clinic.url, CART_CREDENTIALS[PROVIDER])
    try:
        grant = await cart.request_token(
            PROVIDER, "provider", consultationChannel=CONSULTATION, departmentId="cardiology"
        )
    finally:
        await cart.aclose()
    return make_bus(PROVIDER, token=grant.token)


@pytest.fixture
async def make_keeper(kiosk: RecordingSource, clock: SharedClock) -> AsyncIterator[KeeperFactory]:
    """Keepers of PATIENT's token on the shared clock, no jitter; each closed at the end."""
    keepers: list[TokenKeeper] = []

    def build(bus: PubNubBus, **options: Any) -> tuple[TokenKeeper, TokenEvents]:
        events = TokenEvents()
        settings: dict[str, Any] = {
            "policy": RefreshPolicy(jitter_ratio=0.0, retry_min_seconds=1.0, retry_max_seconds=4.0),
            "clock": clock,
            "rng": NoJitter(),
        }
        settings.update(options)
        request = settings.pop("request", TokenRequest(PATIENT, "patient", {"providerId": PROVIDER}))
        keeper = TokenKeeper(settings.pop("source", kiosk), bus, request, events, **settings)
        keepers.append(keeper)
        return keeper, events

    yield build
    await asyncio.gather(*(keeper.aclose() for keeper in keepers))


@pytest.fixture
def token_log(clock: SharedClock) -> Iterator[TokenLog]:
    with attached(TokenLog(clock), "telehealth_client.security.tokens") as handler:
        yield handler
