"""Fixtures for the token keeper: the real relay enforcing Access Manager on a manual clock, the
real clinic stand-in minting tokens on it (the clinic's fixtures), and real PubNubBus clients.

One ``SharedClock`` drives both the relay's token expiry and the keeper's schedule, so a test moves
time past a refresh point or an expiry by calling ``advance`` instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from telehealth_client.pubsub.bus import ConnectionStatus, Envelope, StatusChange
from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus
from telehealth_client.security.clinic_client import ClinicClient, TokenGrant
from telehealth_client.security.tokens import RefreshPolicy, TokenEvent, TokenKeeper, TokenRequest
from telehealth_devstack.clinic import Clinic
from telehealth_devstack.relay import Relay
from tests.integration.clinic.conftest import (  # noqa: F401 (make_clinic is a fixture used here)
    CART_CREDENTIALS,
    KIOSK_CREDENTIAL,
    PUBLISH_KEY,
    SECRET_KEY,
    SUBSCRIBE_KEY,
    ClinicApi,
    ClinicFactory,
    make_clinic,
)
from tests.support.recorder import Recorder

CIPHER_KEY = "tokens-test-cipher-key"
PATIENT_TTL_MINUTES = 1  # PubNub's minimum
PATIENT = "patient-1"
PROVIDER = "dr-lee"
CONSULTATION = "consultation.dr-lee.patient-1"
OTHER_CONSULTATION = "consultation.dr-lee.patient-2"  # another patient's: outside PATIENT's grant


class SharedClock:
    """Manual time, in seconds since the epoch, for the relay (``clock()``) and the keeper.

    Nothing moves until ``advance``; ``sleep_until`` wakes as soon as time reaches its deadline.
    """

    def __init__(self) -> None:
        self._now = float(int(time.time()))  # whole seconds: the relay stamps tokens in whole seconds
        self._moved = asyncio.Condition()

    def __call__(self) -> float:
        return self._now

    def now(self) -> float:
        return self._now

    async def sleep_until(self, deadline: float) -> None:
        async with self._moved:
            await self._moved.wait_for(lambda: self._now >= deadline)

    async def advance(self, seconds: float) -> None:
        async with self._moved:
            self._now += seconds
            self._moved.notify_all()


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
async def clinic(make_clinic: ClinicFactory, relay: Relay, clock: SharedClock) -> Clinic:  # noqa: F811
    """The clinic stand-in on the relay and its clock, granting patients 1-minute tokens; PATIENT has
    given telehealth consent (recorded by the kiosk, as at a check-in)."""
    started = await make_clinic(
        relay_origin=relay.origin, token_ttl_minutes={"patient": PATIENT_TTL_MINUTES}, clock=clock
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        status, answer = (
            await ClinicApi(session)
            .at(started)
            .post("/api/telemedicine/consent", {"patientId": PATIENT, "granted": True, "expiresAt": None})
        )
    assert status == 200, answer
    return started


BusFactory = Callable[..., PubNubBus]


@pytest.fixture
async def make_bus(relay: Relay) -> AsyncIterator[BusFactory]:
    """Buses on the relay with no token of their own; every bus built is closed afterwards."""
    buses: list[PubNubBus] = []

    def build(user_id: str, **overrides: Any) -> PubNubBus:
        settings: dict[str, Any] = {
            "user_id": user_id,
            "subscribe_key": SUBSCRIBE_KEY,
            "publish_key": PUBLISH_KEY,
            "origin": relay.origin,
            "ssl": False,
            "cipher_key": CIPHER_KEY,
            "reconnect_min_seconds": 0.05,
            "reconnect_max_seconds": 0.5,
            "request_timeout_seconds": 5.0,
        }
        settings.update(overrides)
        bus = PubNubBus(BusConfig(**settings))
        buses.append(bus)
        return bus

    yield build
    await asyncio.gather(*(bus.aclose() for bus in buses))


class TokenEvents(Recorder):
    def kinds(self) -> list[str]:
        return [event.kind for event in self.items]

    async def wait_kind(self, kind: str, count: int = 1, within: float = 10.0) -> list[TokenEvent]:
        return await self.wait_for(lambda event: event.kind == kind, count, within)


class Messages(Recorder):
    async def wait_count(self, count: int, within: float = 10.0) -> list[Envelope]:
        return await self.wait_for(lambda item: True, count, within)


class Statuses(Recorder):
    def __init__(self, bus: PubNubBus) -> None:
        super().__init__()
        bus.add_status_listener(self)

    async def wait_status(self, status: ConnectionStatus, count: int = 1, within: float = 10.0) -> None:
        await self.wait_for(
            lambda change: isinstance(change, StatusChange) and change.status == status, count, within
        )


class RecordingSource:
    """The real ClinicClient, remembering the tokens it handed out (to look for them in logs)."""

    def __init__(self, client: ClinicClient) -> None:
        self.client = client
        self.tokens: list[str] = []

    @property
    def requests(self) -> int:
        return len(self.tokens)

    async def request_token(self, user_id: str, role: str, **context: str) -> TokenGrant:
        grant = await self.client.request_token(user_id, role, **context)
        self.tokens.append(grant.token)
        return grant


class NoJitter(random.Random):
    """Refresh exactly at the planned point and retry at the top of each back-off range."""

    def random(self) -> float:
        return 0.0

    def uniform(self, a: float, b: float) -> float:
        return b


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


KeeperFactory = Callable[..., tuple[TokenKeeper, TokenEvents]]


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


class TokenLog(logging.Handler):
    """The keeper's log lines, with the shared clock's time when each was written."""

    def __init__(self, clock: SharedClock) -> None:
        super().__init__(logging.DEBUG)
        self.clock = clock
        self.lines: list[tuple[float, str]] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append((self.clock.now(), record.getMessage()))
        self._changed.set()

    def matching(self, prefix: str) -> list[tuple[float, str]]:
        return [line for line in self.lines if line[1].startswith(prefix)]

    async def wait_count(self, prefix: str, count: int, within: float = 10.0) -> list[tuple[float, str]]:
        async def enough() -> list[tuple[float, str]]:
            while len(self.matching(prefix)) < count:
                self._changed.clear()
                await self._changed.wait()
            return self.matching(prefix)

        return await asyncio.wait_for(enough(), within)


@pytest.fixture
def token_log(clock: SharedClock) -> Iterator[TokenLog]:
    handler = TokenLog(clock)
    logger = logging.getLogger("telehealth_client.security.tokens")
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(previous)
