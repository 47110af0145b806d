"""``Bus.here_now`` on the real SDK and relay: who is on each channel asked (nobody: an empty set),
over more channels than one request names, and the error a refused request raises."""

from __future__ import annotations

import pytest

from telehealth_client.pubsub.bus import BusError
from telehealth_client.pubsub.pubnub_bus import HERE_NOW_CHANNELS_PER_REQUEST
from telehealth_devstack.relay import Relay
from tests.support.bus import BusFactory, Inbox, subscribed

pytestmark = pytest.mark.integration

OCCUPIED = "consultation.dr-smith.patient-abc123"


async def test_here_now_names_who_is_on_each_channel_asked(make_bus: BusFactory, relay: Relay) -> None:
    patient = make_bus("patient-abc123")
    await subscribed(patient, OCCUPIED, Inbox())
    empty = [f"consultation.dr-smith.patient-{n}" for n in range(HERE_NOW_CHANNELS_PER_REQUEST + 5)]

    present = await make_bus("dr-smith").here_now([OCCUPIED, *empty])

    assert present == {OCCUPIED: frozenset({"patient-abc123"}), **{c: frozenset() for c in empty}}
    assert await make_bus("dr-smith").here_now([empty[0]]) == {empty[0]: frozenset()}
    assert await make_bus("dr-smith").here_now([]) == {}


async def test_a_refused_here_now_names_the_request(make_bus: BusFactory, relay: Relay) -> None:
    relay.fail_next(1, status=503)
    with pytest.raises(BusError) as failed:
        await make_bus("dr-smith").here_now([OCCUPIED])
    assert str(failed.value) == "here now: network or server error (HTTP 503)"
    assert failed.value.retryable
