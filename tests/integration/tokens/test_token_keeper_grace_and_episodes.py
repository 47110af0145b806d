"""The token keeper's remaining unpinned behaviour, each found by a mutant that survived the other token
tests: the grace verdict on a refused subscription (when it comes, what it needs, what never sets it),
a publish refusal keeping its place when a subscribe refusal arrives, a new denial episode after the
bus connects, a bug inside the keeper's loop, what the keeper sleeps until, the warning that comes
after expiry, what aclose() answers a waiting caller and the exact text of a second start().

Real relay (Access Manager enforced), real clinic stand-in, real PubNubBus, the shared manual clock.
``Gate`` is a real HTTP hop that delays subscribe requests, as a slow network would (every answer is
the relay's). Sources that wrap the real clinic client say where they differ from it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web

from telehealth_client.pubsub.bus import AccessDeniedError, ConnectionStatus
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.clinic_client import ClinicClient, ClinicError, TokenGrant
from telehealth_client.security.tokens import (
    RefreshPolicy,
    TokenAccessDenied,
    TokenExpired,
    TokenExpiring,
    TokenKeeper,
    TokenRefreshed,
    TokenRefreshFailed,
    TokenRequest,
)
from telehealth_devstack.clinic import Clinic
from telehealth_devstack.relay import Relay
from tests.support.clinic import CART_CREDENTIALS
from tests.support.tap import Tap
from tests.support.tokens import (
    CONSULTATION,
    OTHER_CONSULTATION,
    PATIENT,
    PROVIDER,
    BusFactory,
    KeeperFactory,
    Messages,
    RecordingSource,
    SharedClock,
    Statuses,
    TokenEvents,
    TokenLog,
    refused_publish,
)

GRACE = RefreshPolicy().denial_grace_seconds
WHO = f"user={PATIENT} role=patient"
STILL_REFUSED = TokenAccessDenied(PATIENT, "patient", "subscribe", "still refused after a refresh")
START_TWICE = "TokenKeeper: start() may be called once, before aclose()"


class RecordingClock(SharedClock):
    """The shared manual clock, also remembering each deadline the keeper sleeps until."""

    def __init__(self) -> None:
        super().__init__()
        self.deadlines: list[float | None] = []
        self._slept = asyncio.Condition()

    async def sleep_until(self, deadline: float) -> None:
        async with self._slept:
            self.deadlines.append(deadline)
            self._slept.notify_all()
        await super().sleep_until(deadline)

    async def wait_deadlines(self, count: int) -> list[float | None]:
        async def enough() -> list[float | None]:
            async with self._slept:
                await self._slept.wait_for(lambda: len(self.deadlines) >= count)
                return list(self.deadlines)

        return await asyncio.wait_for(enough(), 10.0)

    async def wait_deadline(self, deadline: float) -> int:
        """Until the keeper sleeps until ``deadline``; the position of that sleep among all."""

        async def slept() -> int:
            async with self._slept:
                await self._slept.wait_for(lambda: deadline in self.deadlines)
                return self.deadlines.index(deadline)

        return await asyncio.wait_for(slept(), 10.0)


@pytest.fixture
def clock() -> RecordingClock:
    return RecordingClock()


class Gate(Tap):
    """Forwards to the relay, but while closed holds every subscribe request (long-poll or handshake)
    until opened: the bus's next request is sent and simply not answered yet."""

    def __init__(self, relay: Relay) -> None:
        super().__init__(relay)
        self._open = asyncio.Event()
        self._open.set()
        self._held: list[str] = []  # the auth token of each subscribe request held
        self._held_changed = asyncio.Condition()

    def close(self) -> None:
        self._open.clear()

    def open(self) -> None:
        self._open.set()

    async def wait_held(self, token: str) -> None:
        """Until a subscribe request carrying ``token`` is being held."""

        async def held() -> None:
            async with self._held_changed:
                await self._held_changed.wait_for(lambda: token in self._held)

        await asyncio.wait_for(held(), 10.0)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/v2/subscribe/") and not self._open.is_set():
            async with self._held_changed:
                self._held.append(request.query.get("auth", ""))
                self._held_changed.notify_all()
            await self._open.wait()
        return await super()._forward(request)


@pytest.fixture
async def gate(relay: Relay) -> AsyncIterator[Gate]:
    async with Gate(relay) as running:
        yield running
        running.open()


class HookedSource:
    """The real clinic client, calling ``hooks[n]`` (if any) before it asks for the ``n``-th token
    (1 = start's): a test decides what happens while the keeper waits for that token."""

    def __init__(self, inner: RecordingSource, clock: SharedClock) -> None:
        self.inner = inner
        self.clock = clock
        self.hooks: dict[int, Callable[[], object]] = {}
        self.asked_at: list[float] = []

    async def request_token(self, user_id: str, role: str, **context: str) -> TokenGrant:
        self.asked_at.append(self.clock.now())
        hook = self.hooks.get(len(self.asked_at))
        if hook is not None:
            result = hook()
            if asyncio.iscoroutine(result):
                await result
        return await self.inner.request_token(user_id, role, **context)


class Pause:
    """A hook that holds the token request until released, saying when it started holding."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self._released = asyncio.Event()

    async def __call__(self) -> None:
        self.entered.set()
        await self._released.wait()

    async def wait_entered(self) -> None:
        await asyncio.wait_for(self.entered.wait(), 10.0)

    def release(self) -> None:
        self._released.set()


async def gated_keeper(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    kiosk: RecordingSource,
    gate: Gate,
    clock: SharedClock,
    at_first_refresh: Callable[[], object],
) -> tuple[PubNubBus, Statuses, TokenKeeper, TokenEvents]:
    """PATIENT's bus through ``gate`` (its statuses recorded from the start) and its keeper,
    started, on a source that calls ``at_first_refresh`` before it asks for the second token."""
    bus = make_bus(PATIENT, origin=gate.origin)
    statuses = Statuses(bus)
    source = HookedSource(kiosk, clock)
    source.hooks[2] = at_first_refresh
    keeper, events = make_keeper(bus, source=source)
    await keeper.start()
    return bus, statuses, keeper, events


# -- the grace verdict on a refused subscription ------------------------------------------------------


async def test_a_refused_subscription_whose_new_refusal_is_not_in_yet_is_reported_at_the_grace_deadline(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    kiosk: RecordingSource,
    gate: Gate,
    clock: SharedClock,
    token_log: TokenLog,
) -> None:
    # The refresh after the 403 closes the gate: the bus's next request goes unanswered.
    bus, statuses, keeper, events = await gated_keeper(make_bus, make_keeper, kiosk, gate, clock, gate.close)
    await clock.advance(1)  # the refresh's token differs (the same grant in the same second does not)
    refreshed_at = clock.now()
    await bus.subscribe([OTHER_CONSULTATION], Messages())  # another patient's consultation
    await statuses.wait_status(ConnectionStatus.ACCESS_DENIED)
    await events.wait_kind("refreshed")
    assert kiosk.tokens[0] != kiosk.tokens[1]
    await gate.wait_held(kiosk.tokens[1])  # asked with the new token: no answer yet
    await clock.advance(GRACE)  # exactly the end of the grace period: the verdict is due now
    (denied,) = await events.wait_kind("access-denied", within=5.0)
    assert denied == STILL_REFUSED
    assert token_log.matching("token access denied") == [
        (
            refreshed_at + GRACE,
            f"token access denied {WHO} source=subscribe reason=still refused after a refresh",
        )
    ]
    # The new token's refusal arrives later: no second report, no further refresh.
    gate.open()
    await statuses.wait_status(ConnectionStatus.ACCESS_DENIED, count=2)
    assert await asyncio.wait_for(keeper.handle_access_denied(AccessDeniedError("publish")), 5) is False
    assert events.kinds() == ["granted", "refreshed", "access-denied"]
    assert kiosk.requests == 2


async def test_a_grace_period_ending_while_the_bus_is_not_refused_reports_nothing_and_the_keeper_goes_on(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    kiosk: RecordingSource,
    gate: Gate,
    clock: RecordingClock,
) -> None:
    bus, statuses, _, events = await gated_keeper(make_bus, make_keeper, kiosk, gate, clock, gate.close)
    await clock.advance(1)  # the refresh's token differs from the first
    refreshed_at = clock.now()
    subscription = await bus.subscribe([OTHER_CONSULTATION], Messages())
    await statuses.wait_status(ConnectionStatus.ACCESS_DENIED)
    await events.wait_kind("refreshed")
    await gate.wait_held(kiosk.tokens[1])
    await subscription.close()  # nothing left to subscribe to: the bus is idle, not refused
    await statuses.wait_status(ConnectionStatus.IDLE)
    verdict = await clock.wait_deadline(refreshed_at + GRACE)  # it sleeps until the grace ends
    await clock.advance(GRACE)
    # Its verdict (none: the bus is not refused) given, it sleeps until the planned refresh.
    assert (await clock.wait_deadlines(verdict + 2))[verdict + 1] == refreshed_at + 48
    await clock.advance(48 - GRACE)
    await events.wait_kind("refreshed", 2)
    await clock.advance(48)  # and the next: the keeper is still keeping the token
    await events.wait_kind("refreshed", 3)
    assert events.items[1:] == [
        TokenRefreshed(PATIENT, "patient", 1, "access-denied"),
        TokenRefreshed(PATIENT, "patient", 1, "scheduled"),
        TokenRefreshed(PATIENT, "patient", 1, "scheduled"),
    ]


async def test_a_publish_refusal_waiting_for_the_keeper_keeps_its_place_when_a_subscribe_refusal_arrives(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    kiosk: RecordingSource,
    gate: Gate,
    clock: SharedClock,
    token_log: TokenLog,
) -> None:
    pause = Pause()  # the scheduled refresh: the keeper is busy while both refusals arrive
    bus, statuses, keeper, events = await gated_keeper(make_bus, make_keeper, kiosk, gate, clock, pause)
    await clock.advance(48)
    await pause.wait_entered()
    denial = asyncio.create_task(keeper.handle_access_denied(await refused_publish(bus)))
    await token_log.wait_count("token denied by the bus", 1)
    await bus.subscribe([OTHER_CONSULTATION], Messages())
    await statuses.wait_status(ConnectionStatus.ACCESS_DENIED)
    gate.close()  # the bus's requests with the coming tokens go unanswered: no second refusal
    pause.release()
    # The publish's refusal is handled: a refresh after a 403, answered True, and no grace verdict.
    assert await asyncio.wait_for(denial, 5) is True
    await gate.wait_held(kiosk.tokens[-1])
    await clock.advance(48)  # past any grace period, up to the next planned refresh
    await events.wait_kind("refreshed", 3)
    assert events.items[1:] == [
        TokenRefreshed(PATIENT, "patient", 1, "scheduled"),
        TokenRefreshed(PATIENT, "patient", 1, "access-denied"),
        TokenRefreshed(PATIENT, "patient", 1, "scheduled"),
    ]
    assert bus.status is ConnectionStatus.ACCESS_DENIED


# -- denial episodes ----------------------------------------------------------------------------------


async def test_once_the_bus_connects_again_a_later_refusal_gets_its_own_refresh(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    provider_bus: PubNubBus,
    clinic: Clinic,
    kiosk: RecordingSource,
    clock: SharedClock,
) -> None:
    bus = make_bus(PATIENT)
    statuses = Statuses(bus)
    keeper, events = make_keeper(bus)
    await keeper.start()
    inbox = Messages()
    await bus.subscribe([CONSULTATION], inbox)
    await statuses.wait_status(ConnectionStatus.CONNECTED)
    provider = ClinicClient(clinic.url, CART_CREDENTIALS[PROVIDER])
    try:
        assert await provider.revoke_access(PATIENT, CONSULTATION) == 1
    finally:
        await provider.aclose()
    # A second later: a grant of the same permissions in the same second is the same (revoked) token.
    await clock.advance(1)
    await provider_bus.publish(CONSULTATION, {"n": 1})  # answers the revoked token's open long-poll
    await statuses.wait_status(ConnectionStatus.ACCESS_DENIED)
    await statuses.wait_status(ConnectionStatus.CONNECTED, count=2)  # refreshed once, and connected
    assert [change.status for change in statuses.items] == [
        ConnectionStatus.CONNECTING,
        ConnectionStatus.CONNECTED,
        ConnectionStatus.ACCESS_DENIED,
        ConnectionStatus.CONNECTED,
    ]
    # The token that connected works: this refusal is a new episode, with a refresh of its own.
    assert await asyncio.wait_for(keeper.handle_access_denied(await refused_publish(bus)), 5) is True
    assert events.items[1:] == [TokenRefreshed(PATIENT, "patient", 1, "access-denied")] * 2
    assert kiosk.requests == 3


# -- a bug inside the keeper's loop -------------------------------------------------------------------


class MalformedOnce(HookedSource):
    """The real clinic client, except that once told to, it hands over a grant no validation saw, with
    a TTL no float can hold: the keeper's planning then raises, as a bug of its own would."""

    def __init__(self, inner: RecordingSource, clock: SharedClock) -> None:
        super().__init__(inner, clock)
        self.malformed_next = False

    async def request_token(self, user_id: str, role: str, **context: str) -> TokenGrant:
        grant = await super().request_token(user_id, role, **context)
        if not self.malformed_next:
            return grant
        self.malformed_next = False
        return TokenGrant.model_construct(
            token=grant.token, ttl_minutes=10**400, channel_config=grant.channel_config
        )


async def test_an_error_inside_the_keepers_loop_is_logged_and_retried_after_the_minimum_pause(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    kiosk: RecordingSource,
    clock: RecordingClock,
    token_log: TokenLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="telehealth_client.security.tokens")
    source = MalformedOnce(kiosk, clock)
    keeper, events = make_keeper(make_bus(PATIENT), source=source)  # retry_min_seconds=1.0
    await keeper.start()
    started = clock.now()
    source.malformed_next = True
    await clock.advance(48)
    ((failed_at, failed),) = await token_log.wait_count("token keeper step failed", 1)
    assert failed_at == started + 48
    assert re.fullmatch(r"token keeper step failed error=OverflowError at tokens\.py:\d+", failed), failed
    (record,) = [r for r in caplog.records if r.getMessage() == failed]
    assert record.levelno == logging.ERROR
    # Not at once, and not never: it pauses for retry_min_seconds.
    assert await clock.wait_deadlines(2) == [started + 48, started + 49]
    await clock.advance(1)
    (refreshed,) = await events.wait_kind("refreshed")
    assert refreshed == TokenRefreshed(PATIENT, "patient", 1, "scheduled")
    assert source.asked_at == [started, started + 48, started + 49]


# -- what the keeper sleeps until -----------------------------------------------------------------------


async def test_while_nothing_has_failed_the_keeper_sleeps_until_the_refresh_not_the_warning(
    make_bus: BusFactory, make_keeper: KeeperFactory, clock: RecordingClock
) -> None:
    # Refresh at 90 % of the 60 s TTL (54 s); a warning would be due at 48 s (20 % before expiry).
    policy = RefreshPolicy(refresh_ratio=0.9, jitter_ratio=0.0, retry_min_seconds=1.0, retry_max_seconds=4.0)
    keeper, events = make_keeper(make_bus(PATIENT), policy=policy)
    await keeper.start()
    started = clock.now()
    assert await clock.wait_deadlines(1) == [started + 54]
    await clock.advance(54)
    await events.wait_kind("refreshed")
    assert await clock.wait_deadlines(2) == [started + 54, started + 108]


async def test_a_warning_that_comes_after_expiry_says_zero_seconds_left(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    clinic: Clinic,
    clock: SharedClock,
    token_log: TokenLog,
) -> None:
    keeper, events = make_keeper(make_bus(PATIENT))
    await keeper.start()
    await clinic.stop()
    await clock.advance(70)  # one jump (a suspended machine): the refresh fails 10 s after expiry
    await events.wait_kind("expired")
    assert events.items[1:] == [
        TokenRefreshFailed(PATIENT, "patient", 1, 1.0, expired=True),
        TokenExpiring(PATIENT, "patient", seconds_left=0.0, failures=1),
        TokenExpired(PATIENT, "patient", failures=1),
    ]
    assert [line for _, line in token_log.matching("token expiring")] == [
        f"token expiring {WHO} seconds_left=0 failures=1"
    ]


# -- lifecycle ------------------------------------------------------------------------------------------


async def test_before_a_token_the_keeper_reports_no_ttl_and_no_channels(
    make_bus: BusFactory, make_keeper: KeeperFactory
) -> None:
    keeper, _ = make_keeper(make_bus(PATIENT))
    assert keeper.ttl_minutes == 0
    assert keeper.channel_config == {}
    refused, _ = make_keeper(make_bus(PATIENT), request=TokenRequest(PATIENT, "patient"))  # no provider
    with pytest.raises(ClinicError):
        await refused.start()
    assert refused.ttl_minutes == 0
    assert refused.channel_config == {}


async def test_aclose_answers_a_refusal_waiting_on_a_refresh_with_false(
    make_bus: BusFactory, make_keeper: KeeperFactory, kiosk: RecordingSource, clock: SharedClock
) -> None:
    bus = make_bus(PATIENT)
    source = HookedSource(kiosk, clock)
    pause = Pause()
    source.hooks[2] = pause  # the refresh after the 403 never gets its token
    keeper, events = make_keeper(bus, source=source)
    await keeper.start()
    denial = asyncio.create_task(keeper.handle_access_denied(await refused_publish(bus)))
    await pause.wait_entered()
    await keeper.aclose()
    assert await asyncio.wait_for(denial, 5) is False
    assert events.kinds() == ["granted"]
    assert kiosk.requests == 1


async def test_a_second_start_and_a_start_after_aclose_are_refused_with_the_exact_text(
    make_bus: BusFactory, make_keeper: KeeperFactory, kiosk: RecordingSource
) -> None:
    keeper, _ = make_keeper(make_bus(PATIENT))
    await keeper.start()
    with pytest.raises(RuntimeError) as twice:
        await keeper.start()
    assert str(twice.value) == START_TWICE
    closed, _ = make_keeper(make_bus(PATIENT))
    await closed.aclose()
    with pytest.raises(RuntimeError) as after_close:
        await closed.start()
    assert str(after_close.value) == START_TWICE
    assert kiosk.requests == 1
