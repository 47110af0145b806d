"""TokenKeeper on the real relay (Access Manager enforced, token expiry on its clock), the real clinic
stand-in (1-minute patient tokens) and real PubNubBus clients. Time is the shared manual clock: a
test moves it past a refresh point or an expiry instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from telehealth_client.pubsub.bus import AccessDeniedError, ConnectionStatus
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.clinic_client import ClinicClient, ClinicError
from telehealth_client.security.tokens import (
    RefreshPolicy,
    TokenAccessDenied,
    TokenExpired,
    TokenExpiring,
    TokenGranted,
    TokenRefreshed,
    TokenRefreshFailed,
    TokenRequest,
)
from telehealth_devstack.clinic import Clinic
from telehealth_devstack.relay import Relay
from tests.support.clinic import CART_CREDENTIALS, ClinicFactory
from tests.support.tokens import (
    CONSULTATION,
    OTHER_CONSULTATION,
    PATIENT,
    PATIENT_TTL_MINUTES,
    PROVIDER,
    BusFactory,
    KeeperFactory,
    Messages,
    RecordingSource,
    SharedClock,
    Statuses,
    TokenEvents,
    TokenLog,
    started_keeper,
)

GRACE = RefreshPolicy().denial_grace_seconds


class Conversation:
    """The provider publishes numbered messages; the patient's subscription must get each once, in order."""

    def __init__(self, provider: PubNubBus, inbox: Messages) -> None:
        self.provider = provider
        self.inbox = inbox
        self.sent = 0

    async def exchange(self) -> None:
        self.sent += 1
        await self.provider.publish(CONSULTATION, {"n": self.sent})
        await self.inbox.wait_count(self.sent)

    def received(self) -> list[int]:
        return [envelope.message["n"] for envelope in self.inbox.items]


async def talking_patient(
    make_bus: BusFactory, make_keeper: KeeperFactory, provider: PubNubBus
) -> tuple[TokenEvents, Conversation, Statuses]:
    """PATIENT's bus with its keeper started, subscribed to its consultation (connected) and one
    message from ``provider`` received: the keeper's events, the conversation, the bus's statuses."""
    bus, _, events = await started_keeper(make_bus, make_keeper)
    statuses = Statuses(bus)
    inbox = Messages()
    await bus.subscribe([CONSULTATION], inbox)
    await statuses.wait_status(ConnectionStatus.CONNECTED)
    talk = Conversation(provider, inbox)
    await talk.exchange()
    return events, talk, statuses


async def test_start_puts_the_clinics_token_on_the_bus(
    make_bus: BusFactory, make_keeper: KeeperFactory, kiosk: RecordingSource
) -> None:
    bus = make_bus(PATIENT)
    with pytest.raises(AccessDeniedError):
        await bus.publish(CONSULTATION, {"n": 0})  # no token yet: the relay refuses
    keeper, events = make_keeper(bus)
    await keeper.start()
    await bus.publish(CONSULTATION, {"n": 1})
    assert events.items == [TokenGranted(PATIENT, "patient", PATIENT_TTL_MINUTES)]
    assert events.items[0].kind == "granted"
    assert keeper.ttl_minutes == PATIENT_TTL_MINUTES
    assert keeper.channel_config["consultationChannel"] == CONSULTATION
    assert kiosk.requests == 1


async def test_refreshes_at_80_percent_of_the_ttl_and_the_subscription_never_notices(
    make_bus: BusFactory, make_keeper: KeeperFactory, provider_bus: PubNubBus, clock: SharedClock
) -> None:
    events, talk, statuses = await talking_patient(make_bus, make_keeper, provider_bus)
    started = clock.now()
    # Token k is granted at 48k s (80 % of the 60 s TTL after token k-1) and expires at 48k + 60 s.
    for k in range(1, 4):
        # 1 s before: no refresh yet (the exchange gives the keeper every chance to act early).
        await clock.advance(started + 48 * k - 1 - clock.now())
        await talk.exchange()
        assert events.kinds().count("refreshed") == k - 1
        await clock.advance(1)
        await events.wait_kind("refreshed", k)
        await talk.exchange()
        # Past token k-1's expiry on the relay's clock: only token k can be carrying the subscription.
        await clock.advance(13)
        await talk.exchange()
    assert talk.received() == list(range(1, talk.sent + 1))  # no gap, no duplicate
    assert [change.status for change in statuses.items] == [
        ConnectionStatus.CONNECTING,
        ConnectionStatus.CONNECTED,
    ]
    assert events.items[1:] == [TokenRefreshed(PATIENT, "patient", 1, "scheduled")] * 3


async def test_a_failing_refresh_backs_off_warns_expires_then_recovers(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    make_clinic: ClinicFactory,
    clinic: Clinic,
    relay: Relay,
    clock: SharedClock,
    token_log: TokenLog,
) -> None:
    bus = make_bus(PATIENT)
    policy = RefreshPolicy(refresh_ratio=0.5, jitter_ratio=0.0, retry_min_seconds=1.0, retry_max_seconds=4.0)
    keeper, events = make_keeper(bus, policy=policy)
    await keeper.start()
    port = clinic.port
    await clinic.stop()  # the clinic backend goes away

    # Refresh due at 30 s of the 60 s TTL; retries after 1, 2, 4, then 4 s (capped) each.
    retry_times = [30, 31, 33, 37, 41, 45]
    elapsed = 0
    for number, at in enumerate(retry_times, start=1):
        await clock.advance(at - elapsed)
        elapsed = at
        await token_log.wait_count("token refresh failed", number)
    retries = [line for _, line in token_log.matching("token refresh failed")]
    assert [line.split("retry_in_seconds=")[1] for line in retries] == [
        "1.000",
        "2.000",
        "4.000",
        "4.000",
        "4.000",
        "4.000",
    ]
    assert all("status=None error=ClinicError" in line for line in retries)
    # The user is told once that access is being renewed; no warning yet: 12 s (20 % of the TTL)
    # before expiry is 48 s.
    assert events.items[1:] == [TokenRefreshFailed(PATIENT, "patient", 1, 1.0, expired=False)]

    await clock.advance(48 - elapsed)
    (expiring,) = await events.wait_kind("expiring")
    assert expiring == TokenExpiring(PATIENT, "patient", seconds_left=12.0, failures=6)
    await clock.advance(1)  # 49 s: one more failure, then at 53 and 57
    await token_log.wait_count("token refresh failed", 7)
    await clock.advance(4)
    await token_log.wait_count("token refresh failed", 8)
    await clock.advance(4)
    await token_log.wait_count("token refresh failed", 9)
    await bus.publish(CONSULTATION, {"n": 1})  # 57 s: the old token still works
    await clock.advance(3)
    (expired,) = await events.wait_kind("expired")
    assert expired == TokenExpired(PATIENT, "patient", failures=9)
    with pytest.raises(AccessDeniedError):
        await bus.publish(CONSULTATION, {"n": 2})  # 60 s: the relay's clock says expired too

    # Back on the same port: the kiosk's client knows only that address.
    await make_clinic(relay_origin=relay.origin, port=port, token_ttl_minutes={"patient": 1}, clock=clock)
    await clock.advance(1)  # 61 s: the retry planned after the 57 s failure
    (refreshed,) = await events.wait_kind("refreshed")
    assert refreshed == TokenRefreshed(PATIENT, "patient", 1, "scheduled")
    await bus.publish(CONSULTATION, {"n": 3})
    assert events.kinds() == ["granted", "refresh-failed", "expiring", "expired", "refreshed"]


async def test_a_403_on_the_subscription_gets_one_refresh_and_the_subscription_resumes(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    provider_bus: PubNubBus,
    clinic: Clinic,
    kiosk: RecordingSource,
    clock: SharedClock,
) -> None:
    events, talk, statuses = await talking_patient(make_bus, make_keeper, provider_bus)
    provider = ClinicClient(clinic.url, CART_CREDENTIALS[PROVIDER])
    try:
        assert await provider.revoke_access(PATIENT, CONSULTATION) == 1
    finally:
        await provider.aclose()
    # A second later: a grant of the same permissions in the same second is the same (revoked) token.
    await clock.advance(1)
    await talk.exchange()  # answered on the revoked token's long-poll or caught up after the refresh
    await statuses.wait_status(ConnectionStatus.ACCESS_DENIED)
    await statuses.wait_status(ConnectionStatus.CONNECTED, count=2)
    await talk.exchange()
    assert events.items[1:] == [TokenRefreshed(PATIENT, "patient", 1, "access-denied")]
    assert kiosk.requests == 2
    # Connected again: the grace period passing later is no verdict.
    await clock.advance(GRACE)
    await talk.exchange()
    assert talk.received() == [1, 2, 3, 4]
    assert events.kinds() == ["granted", "refreshed"]


async def test_a_subscription_still_refused_after_the_refresh_is_reported_once_and_not_retried(
    make_bus: BusFactory, make_keeper: KeeperFactory, kiosk: RecordingSource, clock: SharedClock
) -> None:
    bus = make_bus(PATIENT)
    statuses = Statuses(bus)
    keeper, events = make_keeper(bus)
    await keeper.start()
    await bus.subscribe([OTHER_CONSULTATION], Messages())  # another patient's consultation
    await statuses.wait_status(ConnectionStatus.ACCESS_DENIED)
    await events.wait_kind("refreshed")
    assert kiosk.requests == 2
    await clock.advance(GRACE)  # the bus had its chance to connect with the new token
    (denied,) = await events.wait_kind("access-denied")
    assert denied == TokenAccessDenied(PATIENT, "patient", "subscribe", "still refused after a refresh")
    # No loop: a further 403 gets neither a refresh nor another event.
    with pytest.raises(AccessDeniedError) as refused:
        await bus.publish(OTHER_CONSULTATION, {"n": 1})
    assert await asyncio.wait_for(keeper.handle_access_denied(refused.value), 5) is False
    assert kiosk.requests == 2
    assert events.kinds() == ["granted", "refreshed", "access-denied"]
    assert bus.status is ConnectionStatus.ACCESS_DENIED


async def test_a_refused_publish_gets_one_refresh_then_access_denied(
    make_bus: BusFactory, make_keeper: KeeperFactory, kiosk: RecordingSource
) -> None:
    bus, keeper, events = await started_keeper(make_bus, make_keeper)
    with pytest.raises(AccessDeniedError) as first:
        await bus.publish(OTHER_CONSULTATION, {"n": 1})
    assert str(first.value) == "publish: access denied by Access Manager (HTTP 403)"
    # A new token: try once more.
    assert await asyncio.wait_for(keeper.handle_access_denied(first.value), 5) is True
    with pytest.raises(AccessDeniedError) as second:
        await bus.publish(OTHER_CONSULTATION, {"n": 1})
    assert await asyncio.wait_for(keeper.handle_access_denied(second.value), 5) is False
    assert events.items[1:] == [
        TokenRefreshed(PATIENT, "patient", 1, "access-denied"),
        TokenAccessDenied(PATIENT, "patient", "publish", "still refused after a refresh"),
    ]
    assert kiosk.requests == 2
    await bus.publish(CONSULTATION, {"n": 2})  # its own consultation is still open to it


async def test_no_token_appears_in_any_log_record(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    clinic: Clinic,
    kiosk: RecordingSource,
    clock: SharedClock,
    token_log: TokenLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # As logs.configure() sets them: the SDK and HTTP clients log request URLs, auth included.
    for noisy in ("pubnub", "httpx", "httpcore"):
        caplog.set_level(logging.CRITICAL, logger=noisy)
    caplog.set_level(logging.DEBUG)
    bus, keeper, events = await started_keeper(make_bus, make_keeper)
    await clock.advance(48)
    await events.wait_kind("refreshed")
    with pytest.raises(AccessDeniedError) as refused:
        await bus.publish(OTHER_CONSULTATION, {"n": 1})
    assert await asyncio.wait_for(keeper.handle_access_denied(refused.value), 5) is True
    await clinic.stop()
    await clock.advance(48)  # the refresh planned after the 403's
    await token_log.wait_count("token refresh failed", 1)
    assert kiosk.requests == 3
    keeper_lines = [r.getMessage() for r in caplog.records if r.name == "telehealth_client.security.tokens"]
    assert any(line.startswith("token granted") for line in keeper_lines)
    assert any(line.startswith("token refreshed") for line in keeper_lines)
    assert any(line.startswith("token refresh failed") for line in keeper_lines)
    assert any(line.startswith("token denied by the bus") for line in keeper_lines)
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + (record.exc_text or "")
        for token in kiosk.tokens:
            assert token not in text, f"token in a log record of {record.name}"
            assert token[:24] not in text


async def test_a_refused_first_request_raises_and_leaves_nothing_running(
    make_bus: BusFactory, make_keeper: KeeperFactory
) -> None:
    bus = make_bus(PATIENT)
    keeper, events = make_keeper(bus, request=TokenRequest(PATIENT, "patient"))  # no provider named
    with pytest.raises(ClinicError) as refused:
        await keeper.start()
    assert refused.value.status == 400
    assert "providerId: is required for role patient" in str(refused.value)
    assert events.items == []
    assert not [task for task in asyncio.all_tasks() if task.get_name().startswith("token-keeper")]
    with pytest.raises(AccessDeniedError):
        await bus.publish(CONSULTATION, {"n": 1})


async def test_aclose_cancels_and_awaits_the_refresh_task(
    make_bus: BusFactory, make_keeper: KeeperFactory
) -> None:
    _, keeper, _ = await started_keeper(make_bus, make_keeper)
    (task,) = [task for task in asyncio.all_tasks() if task.get_name() == f"token-keeper-{PATIENT}"]
    with pytest.raises(RuntimeError, match="start\\(\\) may be called once"):
        await keeper.start()
    await keeper.aclose()
    assert task.done()
    assert await asyncio.wait_for(keeper.handle_access_denied(AccessDeniedError("publish")), 5) is False
    await keeper.aclose()  # idempotent
