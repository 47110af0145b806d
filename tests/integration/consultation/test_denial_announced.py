"""A new token that is still refused is announced again: the bus says access-denied once more after
``set_token`` (its status did not change, but the news did), so the token keeper gives its verdict
at once instead of waiting out its grace period."""

from __future__ import annotations

import asyncio

import pytest

from telehealth_client.pubsub.bus import ConnectionStatus, StatusChange
from telehealth_client.security import tokens
from telehealth_client.security.tokens import RefreshPolicy, TokenKeeper, TokenRequest
from tests.support.consultation import APPOINTMENT, PATIENT, PROVIDER, WAIT, Parts
from tests.support.logs import LogLines
from tests.support.recorder import Recorder

pytestmark = pytest.mark.integration

# A channel outside every grant a patient token of pat-1 carries.
OTHER_CONSULTATION = f"consultation.{PROVIDER}.pat-2"


class Statuses(Recorder):
    """The bus's status changes (a status listener), to wait for a count of one status."""

    @property
    def changes(self) -> list[StatusChange]:
        return self.items

    async def wait_count(self, status: ConnectionStatus, count: int) -> None:
        await self.wait_for(lambda change: change.status is status, count, WAIT)


async def test_a_token_still_refused_is_announced_again(parts: Parts, log_lines: LogLines) -> None:
    await parts.record_consent()
    grant = await parts.clinic().request_token(
        PATIENT, "patient", providerId=PROVIDER, appointmentId=APPOINTMENT
    )
    bus = parts.raw_bus(PATIENT, None)
    statuses = Statuses()
    bus.add_status_listener(statuses)
    await bus.subscribe([OTHER_CONSULTATION], lambda _: None)
    await statuses.wait_count(ConnectionStatus.ACCESS_DENIED, 1)

    bus.set_token(grant.token)  # a real token, but not for that channel
    await statuses.wait_count(ConnectionStatus.ACCESS_DENIED, 2)
    assert [c.status for c in statuses.changes][-2:] == [
        ConnectionStatus.ACCESS_DENIED,
        ConnectionStatus.ACCESS_DENIED,
    ]
    # Once per token change, not once per refused poll: two more refusals announce nothing.
    failures = statuses.changes[-1].failures
    await log_lines.wait_line(f"bus subscribe failed failures={failures + 2} ")
    assert sum(c.status is ConnectionStatus.ACCESS_DENIED for c in statuses.changes) == 2


async def test_the_keeper_reports_a_refused_subscription_without_waiting_out_its_grace(
    parts: Parts,
) -> None:
    await parts.record_consent()
    bus = parts.raw_bus(PATIENT, None)
    reported: asyncio.Queue[tokens.TokenEvent] = asyncio.Queue()
    keeper = TokenKeeper(
        parts.clinic(),
        bus,
        TokenRequest(PATIENT, "patient", {"providerId": PROVIDER, "appointmentId": APPOINTMENT}),
        reported.put_nowait,
        # Far beyond the test's wait: only the bus's second announcement can bring the verdict.
        policy=RefreshPolicy(denial_grace_seconds=600.0),
    )
    await keeper.start()
    try:
        await bus.subscribe([OTHER_CONSULTATION], lambda _: None)
        kinds: list[str] = []
        while "access-denied" not in kinds:
            event = await asyncio.wait_for(reported.get(), WAIT)
            kinds.append(event.kind)
        assert kinds == ["granted", "refreshed", "access-denied"]
        assert bus.status is ConnectionStatus.ACCESS_DENIED
    finally:
        await keeper.aclose()
