"""Subscribing, closing subscriptions and closing the bus: who is present, what is refused, what is said."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest

from telehealth_client.pubsub.bus import BusError, ConnectionStatus
from telehealth_devstack.relay import Relay
from tests.support.bus import BusFactory, Inbox, StatusLog, grant, subscribed

from .switch import Switch

CHANNEL = "consultation.dr-smith.patient-abc123"
FILES = CHANNEL + ".files"


@pytest.fixture
async def switch(relay: Relay) -> AsyncIterator[Switch]:
    # Requested before make_bus: the buses are closed before the switch goes away.
    async with Switch(relay) as running:
        yield running


async def test_subscribing_to_nothing_or_on_a_closed_bus_is_refused(make_bus: BusFactory) -> None:
    bus = make_bus("patient-abc123")
    with pytest.raises(ValueError, match=r"^channels: at least one channel is required$"):
        await bus.subscribe([], Inbox())
    assert bus.status == ConnectionStatus.IDLE
    await bus.aclose()
    with pytest.raises(BusError) as refused:
        await bus.subscribe([CHANNEL], Inbox())
    assert (str(refused.value), refused.value.retryable) == ("subscribe: the bus is closed", False)


async def test_the_channel_is_left_only_when_its_last_subscription_closes(
    make_bus: BusFactory, relay: Relay
) -> None:
    kiosk = make_bus("patient-abc123")
    first = await kiosk.subscribe([CHANNEL, FILES], Inbox())
    statuses = await subscribed(kiosk, CHANNEL, Inbox())
    assert relay.occupants(CHANNEL) == relay.occupants(FILES) == ["patient-abc123"]
    await first.close()  # CHANNEL is still wanted by the second subscription
    assert relay.occupants(CHANNEL) == ["patient-abc123"]
    assert relay.occupants(FILES) == []
    await first.close()  # closing twice changes nothing
    assert relay.occupants(CHANNEL) == ["patient-abc123"]
    assert kiosk.status == ConnectionStatus.CONNECTED
    await kiosk.aclose()
    assert relay.occupants(CHANNEL) == []
    assert statuses.statuses()[-1] == ConnectionStatus.STOPPED


async def test_closing_the_last_subscription_goes_idle(make_bus: BusFactory, relay: Relay) -> None:
    kiosk = make_bus("patient-abc123")
    statuses = StatusLog(kiosk)
    subscription = await kiosk.subscribe([CHANNEL], Inbox(), with_presence=True)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    await subscription.close()
    assert relay.occupants(CHANNEL) == []
    await statuses.wait_for(ConnectionStatus.IDLE, within=5)
    assert kiosk.timetoken == 0  # a later subscription starts from now


async def test_a_leave_that_cannot_be_sent_is_logged_with_the_channel_count(
    switch: Switch, make_bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="telehealth_client.pubsub.pubnub_bus")
    kiosk = make_bus("patient-abc123", origin=switch.origin)
    # With presence: its `-pnpres` channels are listened to, never joined, so never left.
    subscription = await kiosk.subscribe([CHANNEL, FILES], Inbox(), with_presence=True)
    await StatusLog(kiosk).wait_for(ConnectionStatus.CONNECTED)
    switch.unplug()
    await subscription.close()
    assert "leave not delivered channels=2" in [r.getMessage() for r in caplog.records]


async def test_closing_the_bus_leaves_says_stopped_once_and_is_idempotent(
    make_bus: BusFactory, relay: Relay
) -> None:
    kiosk = make_bus("patient-abc123")
    statuses = await subscribed(kiosk, CHANNEL, Inbox())
    await kiosk.aclose()
    await kiosk.aclose()
    assert relay.occupants(CHANNEL) == []
    assert statuses.statuses() == [
        ConnectionStatus.CONNECTING,
        ConnectionStatus.CONNECTED,
        ConnectionStatus.STOPPED,
    ]
    assert kiosk.status == ConnectionStatus.STOPPED


def running_bus_loops() -> list[str]:
    return sorted(
        t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("bus-") and not t.done()
    )


async def test_closing_right_after_connecting_stops_every_loop(
    make_bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Connecting wakes the heartbeat loop; a close before it runs must still stop it (Python 3.11's
    # wait_for swallows a cancellation that arrives as its wait completes).
    kiosk = make_bus("patient-abc123")
    await subscribed(kiosk, CHANNEL, Inbox())
    assert running_bus_loops() == ["bus-dispatch", "bus-heartbeat", "bus-subscribe"]
    await kiosk.aclose()
    assert running_bus_loops() == []
    assert "did not stop in time" not in caplog.text


async def test_closing_while_a_new_token_cuts_the_back_off_short_stops_every_loop(
    switch: Switch, make_bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    kiosk = make_bus("patient-abc123", origin=switch.origin)
    statuses = await subscribed(kiosk, CHANNEL, Inbox())
    switch.unplug()
    await statuses.wait_for(ConnectionStatus.RECONNECTING)
    kiosk.set_token("p0F2AkF0")  # wakes the subscribe loop from its back-off
    await kiosk.aclose()
    assert running_bus_loops() == []
    assert "did not stop in time" not in caplog.text


async def test_a_new_token_refused_like_the_old_one_is_announced_again(
    make_bus: BusFactory, relay: Relay
) -> None:
    # The token keeper waits for the verdict on each token it sets: an unchanged status is still news.
    relay.enforce_access = True
    kiosk = make_bus("patient-abc123")
    statuses = StatusLog(kiosk)
    await kiosk.subscribe([CHANNEL], Inbox())
    first = await statuses.wait_for(ConnectionStatus.ACCESS_DENIED)
    assert (first.reason, first.failures) == ("access denied by Access Manager", 1)
    mark = len(statuses.changes)
    kiosk.set_token(await grant(relay, "patient-abc123", "another.channel"))
    again = await statuses.wait_for(ConnectionStatus.ACCESS_DENIED, within=5, after=mark)
    assert again.reason == "access denied by Access Manager"
    assert again.failures > first.failures
    assert statuses.statuses()[:2] == [ConnectionStatus.CONNECTING, ConnectionStatus.ACCESS_DENIED]


async def test_a_failed_bus_says_stopped_when_it_is_closed(make_bus: BusFactory) -> None:
    class Fatal(BaseException):
        """Not an Exception: nothing in the bus catches it, so the dispatch loop ends."""

    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")

    def fatal(envelope: object) -> None:
        raise Fatal

    statuses = StatusLog(kiosk)
    await kiosk.subscribe([CHANNEL], fatal)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    await provider.publish(CHANNEL, {"n": 1})
    await statuses.wait_for(ConnectionStatus.FAILED)
    await kiosk.aclose()
    assert statuses.statuses()[-2:] == [ConnectionStatus.FAILED, ConnectionStatus.STOPPED]
    assert kiosk.status == ConnectionStatus.STOPPED


async def test_too_many_channels_is_a_final_subscribe_error_naming_the_count(make_bus: BusFactory) -> None:
    bus = make_bus("dr-smith")
    with pytest.raises(BusError) as refused:
        await bus.subscribe([f"queue.dept-{n}" for n in range(51)], Inbox(), with_presence=True)
    assert str(refused.value) == (
        "subscribe: channels: 102 channels (presence channels included) exceed PubNub's"
        " limit of 100 in one subscribe request"
    )
    assert (refused.value.operation, refused.value.retryable) == ("subscribe", False)
    assert bus.status == ConnectionStatus.IDLE
