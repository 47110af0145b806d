"""The token keeper tests' helpers: one ``SharedClock`` drives both the relay's token expiry and the
keeper's schedule, so a test moves time past a refresh point or an expiry by calling ``advance``
instead of waiting for it; recorders of the keeper's events, messages and statuses."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from telehealth_client.pubsub.bus import AccessDeniedError, ConnectionStatus, Envelope, StatusChange
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.clinic_client import ClinicClient, TokenGrant
from telehealth_client.security.tokens import TokenEvent, TokenKeeper
from telehealth_devstack.clinic import Clinic
from tests.support.clinic import ClinicApi, record_consent
from tests.support.recorder import Recorder

CIPHER_KEY = "tokens-test-cipher-key"


PATIENT_TTL_MINUTES = 1  # PubNub's minimum


PATIENT = "patient-1"


PROVIDER = "dr-lee"


CONSULTATION = "consultation.dr-lee.patient-1"


OTHER_CONSULTATION = "consultation.dr-lee.patient-2"  # another patient's: outside PATIENT's grant


async def set_consent(clinic: Clinic, granted: bool) -> None:
    """The kiosk records PATIENT's telehealth consent at ``clinic``, given or withdrawn."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        await record_consent(ClinicApi(session).at(clinic), PATIENT, granted=granted)


async def refused_publish(bus: PubNubBus) -> AccessDeniedError:
    with pytest.raises(AccessDeniedError) as refused:
        await bus.publish(OTHER_CONSULTATION, {"n": 1})  # another patient's: outside the grant
    return refused.value


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


BusFactory = Callable[..., PubNubBus]


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


KeeperFactory = Callable[..., tuple[TokenKeeper, TokenEvents]]


class TokenLog(logging.Handler):
    """The keeper's log lines, with the shared clock's time when each was written."""

    def __init__(self, clock: SharedClock) -> None:
        super().__init__(logging.DEBUG)
        self.clock = clock
        self.recorder = Recorder()
        self.lines: list[tuple[float, str]] = self.recorder.items

    def emit(self, record: logging.LogRecord) -> None:
        self.recorder.add((self.clock.now(), record.getMessage()))

    def matching(self, prefix: str) -> list[tuple[float, str]]:
        return [line for line in self.lines if line[1].startswith(prefix)]

    async def wait_count(self, prefix: str, count: int, within: float = 10.0) -> list[tuple[float, str]]:
        await self.recorder.until(lambda: len(self.matching(prefix)) >= count, within)
        return self.matching(prefix)


async def started_keeper(
    make_bus: BusFactory, make_keeper: KeeperFactory, **options: Any
) -> tuple[PubNubBus, TokenKeeper, TokenEvents]:
    """PATIENT's bus with no token of its own and a keeper of its token (``make_keeper``'s
    ``options``), started: it holds its first token."""
    bus = make_bus(PATIENT)
    keeper, events = make_keeper(bus, **options)
    await keeper.start()
    return bus, keeper, events
