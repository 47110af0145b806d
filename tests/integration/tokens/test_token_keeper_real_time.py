"""The one token test on real time: real clinic, real relay (its own wall clock), real buses, 1-minute
patient tokens. The refresh point is brought forward (5 % of the TTL, about 3 s) so that two refreshes
take seconds, not minutes; every other test moves a manual clock instead.
"""

from __future__ import annotations

import random
import time

import pytest

from telehealth_client.pubsub.bus import ConnectionStatus
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.tokens import LoopClock, RefreshPolicy, TokenRefreshed
from tests.support.tokens import CONSULTATION, PATIENT, BusFactory, KeeperFactory, Messages, Statuses


class WallClock:
    """The relay's and the clinic's clock for this module: the real one."""

    def __call__(self) -> float:
        return time.time()


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


async def test_two_real_refreshes_while_the_subscription_keeps_receiving(
    make_bus: BusFactory, make_keeper: KeeperFactory, provider_bus: PubNubBus
) -> None:
    bus = make_bus(PATIENT)
    statuses = Statuses(bus)
    keeper, events = make_keeper(
        bus, policy=RefreshPolicy(refresh_ratio=0.05), clock=LoopClock(), rng=random.Random()
    )
    await keeper.start()
    inbox = Messages()
    await bus.subscribe([CONSULTATION], inbox)
    await statuses.wait_status(ConnectionStatus.CONNECTED)
    for refreshes in range(3):
        if refreshes:
            await events.wait_kind("refreshed", refreshes, within=15.0)
        await provider_bus.publish(CONSULTATION, {"n": refreshes + 1})
        await inbox.wait_count(refreshes + 1)
    assert [envelope.message["n"] for envelope in inbox.items] == [1, 2, 3]
    assert [change.status for change in statuses.items] == [
        ConnectionStatus.CONNECTING,
        ConnectionStatus.CONNECTED,
    ]
    assert events.items[1:3] == [TokenRefreshed(PATIENT, "patient", 1, "scheduled")] * 2
