"""retire(): a keeper whose token is known to be going away stops reacting at once, synchronously."""

from __future__ import annotations

import pytest

from telehealth_client.pubsub.bus import AccessDeniedError, ConnectionStatus
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.clinic import Clinic
from tests.support.clinic import CART_CREDENTIALS
from tests.support.tokens import (
    CONSULTATION,
    PATIENT,
    PROVIDER,
    BusFactory,
    KeeperFactory,
    Messages,
    RecordingSource,
    Statuses,
)


async def test_a_retired_keeper_neither_refreshes_nor_reports_the_403s_that_follow(
    make_bus: BusFactory,
    make_keeper: KeeperFactory,
    provider_bus: PubNubBus,
    clinic: Clinic,
    kiosk: RecordingSource,
) -> None:
    bus = make_bus(PATIENT)
    statuses = Statuses(bus)
    keeper, events = make_keeper(bus)
    await keeper.start()
    await bus.subscribe([CONSULTATION], Messages())
    await statuses.wait_status(ConnectionStatus.CONNECTED)

    keeper.retire()  # e.g. an invited provider just read its removal; the revoke follows
    provider = ClinicClient(clinic.url, CART_CREDENTIALS[PROVIDER])
    try:
        assert await provider.revoke_access(PATIENT, CONSULTATION) == 1
    finally:
        await provider.aclose()
    with pytest.raises(AccessDeniedError) as refused:
        await bus.publish(CONSULTATION, {"n": 1})
    assert await keeper.handle_access_denied(refused.value) is False
    # The open long-poll answers the provider's message; the next one is refused.
    await provider_bus.publish(CONSULTATION, {"n": 2})
    await statuses.wait_status(ConnectionStatus.ACCESS_DENIED)
    await keeper.aclose()
    assert kiosk.requests == 1  # the first grant only: no refresh was attempted
    assert events.kinds() == ["granted"]
