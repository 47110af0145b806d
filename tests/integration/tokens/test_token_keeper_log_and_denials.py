"""What the token keeper tells its operator and its caller, exactly: one log line per outcome (user,
role, TTL, status, retry delay; never the token), the access-denied reasons, a listener that raises,
and calls out of order. Mutants that survived test_token_keeper.py changed these and nothing noticed.

Real relay (Access Manager enforced), real clinic stand-in, real PubNubBus, the shared manual clock.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from telehealth_client.pubsub.bus import AccessDeniedError
from telehealth_client.security.clinic_client import TokenGrant
from telehealth_client.security.tokens import (
    RefreshPolicy,
    TokenAccessDenied,
    TokenEvent,
    TokenKeeper,
    TokenRefreshed,
    TokenRefreshFailed,
    TokenRequest,
)
from telehealth_devstack.clinic import Clinic
from telehealth_devstack.relay import Relay
from tests.support.clinic import ClinicFactory
from tests.support.tokens import (
    CONSULTATION,
    PATIENT,
    PROVIDER,
    BusFactory,
    KeeperFactory,
    NoJitter,
    RecordingSource,
    SharedClock,
    TokenLog,
    refused_publish,
    set_consent,
    started_keeper,
)

WHO = f"user={PATIENT} role=patient"
RETRY = "retry_in_seconds"


def lines(token_log: TokenLog) -> list[str]:
    return [line for _, line in token_log.lines]


async def verdict(keeper: TokenKeeper, error: AccessDeniedError) -> bool:
    """The keeper's answer to a refused publish, within a bound: a keeper that never answers fails."""
    return await asyncio.wait_for(keeper.handle_access_denied(error), 5.0)


async def test_each_outcome_is_one_exact_log_line(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    kiosk: RecordingSource,
    clinic: Clinic,
    clock: SharedClock,
    token_log: TokenLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="telehealth_client.security.tokens")
    bus, keeper, events = await started_keeper(make_bus, make_keeper)
    await clock.advance(48)  # 80 % of the 60 s TTL
    await events.wait_kind("refreshed")
    assert await verdict(keeper, await refused_publish(bus)) is True
    assert await verdict(keeper, await refused_publish(bus)) is False
    # The clinic now refuses this patient (consent withdrawn): the next refresh fails with its 403.
    await set_consent(clinic, False)
    await clock.advance(48)  # 96 s: the refresh planned after the 403's token (granted at 48 s),
    await events.wait_kind("expiring")  # which is also 12 s (20 % of the TTL) before its expiry
    await clock.advance(12)  # 108 s: the retry due at 97 s fails, and the token has expired
    await events.wait_kind("expired")
    assert lines(token_log) == [
        f"token granted {WHO} ttl_minutes=1",
        f"token refreshed {WHO} ttl_minutes=1",
        f"token denied by the bus user={PATIENT} operation=publish",
        f"token refreshed after a 403 {WHO} ttl_minutes=1",
        f"token denied by the bus user={PATIENT} operation=publish",
        f"token access denied {WHO} source=publish reason=still refused after a refresh",
        f"token refresh failed {WHO} when=scheduled status=403 error=ClinicError failures=1 {RETRY}=1.000",
        f"token expiring {WHO} seconds_left=12 failures=1",
        f"token refresh failed {WHO} when=scheduled status=403 error=ClinicError failures=2 {RETRY}=2.000",
        f"token expired {WHO} failures=2",
    ]
    keeper_records = [
        record for record in caplog.records if record.name == "telehealth_client.security.tokens"
    ]
    assert [record.getMessage() for record in keeper_records] == lines(token_log)
    assert [record.levelno for record in keeper_records] == [
        logging.INFO,
        logging.INFO,
        logging.INFO,
        logging.INFO,
        logging.INFO,
        logging.WARNING,
        logging.WARNING,
        logging.WARNING,
        logging.WARNING,
        logging.WARNING,
    ]
    for token in kiosk.tokens:
        assert not any(token in line for line in lines(token_log))


async def test_a_refresh_after_a_403_that_cannot_reach_the_clinic_is_retried_and_the_publish_waits(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    make_clinic: ClinicFactory,
    clinic: Clinic,
    relay: Relay,
    clock: SharedClock,
    token_log: TokenLog,
) -> None:
    """No answer from the clinic is no verdict (issue 19): the refused publish waits for the token
    the retries bring once the clinic is back, and is then told to try again."""
    bus, keeper, events = await started_keeper(make_bus, make_keeper)
    port = clinic.port
    await clinic.stop()
    waiting = asyncio.ensure_future(keeper.handle_access_denied(await refused_publish(bus)))
    await token_log.wait_count("token refresh failed", 1)
    await clock.advance(1)  # the retry, 1 s later, fails too
    await token_log.wait_count("token refresh failed", 2)
    assert not waiting.done()
    assert events.items[1:] == [TokenRefreshFailed(PATIENT, "patient", 1, 1.0, expired=False)]
    await make_clinic(relay_origin=relay.origin, port=port, token_ttl_minutes={"patient": 1}, clock=clock)
    await clock.advance(2)  # the next retry
    assert await asyncio.wait_for(waiting, 5.0) is True
    assert events.items[2:] == [TokenRefreshed(PATIENT, "patient", 1, "access-denied")]
    assert lines(token_log)[1:] == [
        f"token denied by the bus user={PATIENT} operation=publish",
        f"token refresh failed {WHO} when=after a 403 status=None error=ClinicError failures=1 {RETRY}=1.000",
        f"token refresh failed {WHO} when=scheduled status=None error=ClinicError failures=2 {RETRY}=2.000",
        f"token refreshed after a 403 {WHO} ttl_minutes=1",
    ]
    # That token was issued for the 403: the same refusal again is the verdict.
    assert await verdict(keeper, await refused_publish(bus)) is False
    assert events.items[-1] == TokenAccessDenied(
        PATIENT, "patient", "publish", "still refused after a refresh"
    )


async def test_a_refresh_after_a_403_that_the_clinic_refuses_is_reported_at_once_with_its_own_reason(
    make_bus: BusFactory, make_keeper: KeeperFactory, clinic: Clinic, token_log: TokenLog
) -> None:
    bus, keeper, events = await started_keeper(make_bus, make_keeper)
    await set_consent(clinic, False)
    assert await verdict(keeper, await refused_publish(bus)) is False
    assert events.items[1:] == [
        TokenAccessDenied(
            PATIENT, "patient", "publish", "the clinic refused a new token", consent_withdrawn=True
        )
    ]
    assert lines(token_log)[1:] == [
        f"token denied by the bus user={PATIENT} operation=publish",
        f"token refresh failed {WHO} when=after a 403 status=403 error=ClinicError failures=1 {RETRY}=1.000",
        f"token access denied {WHO} source=publish reason=the clinic refused a new token (consent)",
    ]


async def test_a_scheduled_refresh_the_clinic_refuses_is_a_verdict_at_once(
    make_bus: BusFactory, make_keeper: KeeperFactory, clinic: Clinic, clock: SharedClock
) -> None:
    """The clinic's 403 on a scheduled refresh is said while the token still works (the far end can
    still be told); a refresh that merely fails is not (the other tests)."""
    bus, _, events = await started_keeper(make_bus, make_keeper)
    await set_consent(clinic, False)
    await clock.advance(48)
    (denied,) = await events.wait_kind("access-denied")
    assert denied == TokenAccessDenied(
        PATIENT, "patient", "refresh", "the clinic refused a new token", consent_withdrawn=True
    )
    await bus.publish(CONSULTATION, {"n": 1})  # the old token still works: the far end can be told
    await set_consent(clinic, True)
    await clock.advance(1)  # still retried: a token granted again is taken, and nothing more is said
    (refreshed,) = await events.wait_kind("refreshed")
    assert refreshed == TokenRefreshed(PATIENT, "patient", 1, "scheduled")
    assert events.kinds() == ["granted", "access-denied", "expiring", "refreshed"]  # 48 s: 12 s left


class BrokenSource:
    """The real clinic client until told to break, then an error that is not a ClinicError (a bug in
    the source): the keeper must log its type and place, never its message."""

    def __init__(self, inner: RecordingSource) -> None:
        self.inner = inner
        self.broken = False

    async def request_token(self, user_id: str, role: str, **context: str) -> TokenGrant:
        if self.broken:
            raise KeyError("secret-detail")
        return await self.inner.request_token(user_id, role, **context)


async def test_a_refresh_failing_with_a_bug_logs_its_type_and_place_and_is_retried(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    kiosk: RecordingSource,
    clock: SharedClock,
    token_log: TokenLog,
) -> None:
    source = BrokenSource(kiosk)
    keeper, events = make_keeper(make_bus(PATIENT), source=source)
    await keeper.start()
    source.broken = True
    await clock.advance(48)
    (failed,) = await token_log.wait_count("token refresh failed", 1)
    assert failed[1].startswith(f"token refresh failed {WHO} when=scheduled status=None error=KeyError at ")
    assert failed[1].endswith(" failures=1 retry_in_seconds=1.000")
    assert "secret-detail" not in failed[1]
    source.broken = False
    await clock.advance(1)
    (refreshed,) = await events.wait_kind("refreshed")
    assert refreshed == TokenRefreshed(PATIENT, "patient", 1, "scheduled")


async def test_a_listener_that_raises_stops_neither_start_nor_the_refreshes(
    make_bus: BusFactory, kiosk: RecordingSource, clock: SharedClock, token_log: TokenLog
) -> None:
    bus = make_bus(PATIENT)
    seen: list[str] = []

    def listener(event: TokenEvent) -> None:
        seen.append(event.kind)
        raise RuntimeError("listener bug")

    request = TokenRequest(PATIENT, "patient", {"providerId": PROVIDER})
    policy = RefreshPolicy(jitter_ratio=0.0)
    keeper = TokenKeeper(kiosk, bus, request, listener, policy=policy, clock=clock, rng=NoJitter())
    try:
        await keeper.start()
        await bus.publish(CONSULTATION, {"n": 1})  # the token is on the bus all the same
        await clock.advance(48)
        await token_log.wait_count("token event listener failed", 2)
    finally:
        await keeper.aclose()
    assert seen == ["granted", "refreshed"]
    failures = token_log.matching("token event listener failed")
    assert [line.split(" error=")[0] for _, line in failures] == [
        "token event listener failed kind=granted",
        "token event listener failed kind=refreshed",
    ]
    assert all(line.split(" error=")[1].startswith("RuntimeError at ") for _, line in failures)


async def test_calls_out_of_order_are_refused_or_answered_no(
    make_bus: BusFactory, make_keeper: KeeperFactory, kiosk: RecordingSource
) -> None:
    keeper, events = make_keeper(make_bus(PATIENT))
    # Before start: no token to refresh, so a 403 cannot be cured.
    assert await verdict(keeper, AccessDeniedError("publish")) is False
    assert kiosk.requests == 0
    await keeper.aclose()
    with pytest.raises(RuntimeError, match=r"start\(\) may be called once, before aclose\(\)"):
        await keeper.start()
    assert kiosk.requests == 0 and events.items == []


async def test_channel_config_is_a_copy(make_bus: BusFactory, make_keeper: KeeperFactory) -> None:
    keeper, _ = make_keeper(make_bus(PATIENT))
    await keeper.start()
    config = keeper.channel_config
    assert isinstance(config, dict)
    config["consultationChannel"] = "changed"
    assert keeper.channel_config["consultationChannel"] == CONSULTATION


async def test_a_403_on_a_token_that_merely_expired_is_refreshed_even_after_an_earlier_403(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    make_clinic: ClinicFactory,
    clinic: Clinic,
    relay: Relay,
    clock: SharedClock,
) -> None:
    """An earlier 403 was answered with a refresh (the episode stays open while the bus stays
    connected); the clinic then goes away and the token runs out. The 403 that follows is the
    token's age, not a verdict: the issue's kiosk ended the visit here."""
    bus, keeper, events = await started_keeper(make_bus, make_keeper)
    assert await verdict(keeper, await refused_publish(bus)) is True
    port = clinic.port
    await clinic.stop()
    await clock.advance(61)  # past the refreshed token's life; every scheduled refresh failed
    await events.wait_kind("expired")
    with pytest.raises(AccessDeniedError) as expired:
        await bus.publish(CONSULTATION, {"n": 1})  # the consultation's own channel: only the age
    waiting = asyncio.ensure_future(keeper.handle_access_denied(expired.value))
    await make_clinic(relay_origin=relay.origin, port=port, token_ttl_minutes={"patient": 1}, clock=clock)
    await clock.advance(4)  # the next retry (at most 4 s away)
    assert await asyncio.wait_for(waiting, 5.0) is True
    await bus.publish(CONSULTATION, {"n": 2})
    assert "access-denied" not in events.kinds()


async def test_once_the_token_has_run_out_refreshes_are_retried_within_the_expired_ceiling(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    make_clinic: ClinicFactory,
    clinic: Clinic,
    relay: Relay,
    clock: SharedClock,
    token_log: TokenLog,
) -> None:
    """While the token works the back-off may grow to a minute; once it has run out nothing can be
    published, so the retry planned far off is brought in and later ones stay close: access is
    back within seconds of the clinic (the real-process run waited 52 s with the plain back-off)."""
    policy = RefreshPolicy(
        refresh_ratio=0.05,
        jitter_ratio=0.0,
        retry_min_seconds=1.0,
        retry_max_seconds=60.0,
        retry_max_expired_seconds=2.0,
    )
    keeper, events = make_keeper(make_bus(PATIENT), policy=policy)
    await keeper.start()
    port = clinic.port
    await clinic.stop()
    elapsed = 0.0
    for number, at in enumerate([3, 4, 6, 10, 18, 34], start=1):  # back-off 1, 2, 4, 8, 16, 32 s
        await clock.advance(at - elapsed)
        elapsed = at
        await token_log.wait_count("token refresh failed", number)
    await clock.advance(60 - elapsed)  # expired: the retry planned for 66 s moves to 62 s
    await events.wait_kind("expired")
    await clock.advance(2)
    await token_log.wait_count("token refresh failed", 7)
    retries = [line.split("retry_in_seconds=")[1] for _, line in token_log.matching("token refresh failed")]
    assert retries == ["1.000", "2.000", "4.000", "8.000", "16.000", "32.000", "2.000"]
    await make_clinic(relay_origin=relay.origin, port=port, token_ttl_minutes={"patient": 1}, clock=clock)
    await clock.advance(2)
    await events.wait_kind("refreshed")


def test_the_expired_ceiling_is_checked_like_the_other_delays() -> None:
    with pytest.raises(ValueError, match="retry_max_expired_seconds: must be a positive number"):
        RefreshPolicy(retry_max_expired_seconds=0)
