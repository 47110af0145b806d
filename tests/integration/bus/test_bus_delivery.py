"""Who gets what arrives: messages to message handlers, presence to presence handlers, in order,
and what is not delivered is logged with its channel and reason (never its content)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from telehealth_client.pubsub.bus import ConnectionStatus, Envelope, PresenceEvent
from telehealth_devstack.relay import Relay
from tests.support.bus import BusFactory, Inbox, StatusLog, subscribed

CHANNEL = "consultation.dr-smith.patient-abc123"
LOGGER = "telehealth_client.pubsub.pubnub_bus"


def logged(caplog: pytest.LogCaptureFixture, level: int, start: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.getMessage().startswith(start)]


async def test_every_subscription_on_a_channel_gets_each_message_in_the_order_they_subscribed(
    make_bus: BusFactory,
) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    order: list[str] = []
    done = Inbox()

    def first(envelope: Envelope) -> None:
        order.append(f"first {envelope.message['n']}")

    async def second(envelope: Envelope) -> None:
        order.append(f"second {envelope.message['n']}")
        await done(envelope)

    statuses = StatusLog(kiosk)
    await kiosk.subscribe([CHANNEL], first)
    await kiosk.subscribe([CHANNEL, CHANNEL + ".files"], second)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    await provider.publish(CHANNEL, {"n": 1})
    await provider.publish(CHANNEL + ".files", {"n": 2})
    await done.wait_for(2)
    assert order == ["first 1", "second 1", "second 2"]


async def test_presence_goes_only_to_presence_handlers_and_messages_only_to_message_handlers(
    make_bus: BusFactory,
) -> None:
    provider, kiosk = make_bus("dr-smith"), make_bus("patient-abc123")
    presence: asyncio.Queue[object] = asyncio.Queue()
    messages: list[object] = []
    received = Inbox()

    async def on_message(envelope: Envelope) -> None:
        messages.append(envelope)
        await received(envelope)

    statuses = StatusLog(provider)
    # Subscribed first, so the message reaches it first: whatever it gets, it has got by the end.
    await provider.subscribe([CHANNEL], on_presence=presence.put)
    await provider.subscribe([CHANNEL], on_message)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    await subscribed(kiosk, CHANNEL, Inbox())
    while not isinstance(event := await asyncio.wait_for(presence.get(), 10), PresenceEvent) or (
        event.user_id != "patient-abc123"
    ):
        pass
    assert (event.channel, event.action) == (CHANNEL, "join")
    await kiosk.publish(CHANNEL, {"n": 1})
    await received.wait_for(1)
    assert [type(item) for item in messages] == [Envelope]
    while not presence.empty():
        assert isinstance(presence.get_nowait(), PresenceEvent)


async def test_what_is_not_delivered_is_logged_with_its_channel_and_reason(
    make_bus: BusFactory, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    inbox = Inbox()
    await subscribed(kiosk, CHANNEL, inbox)
    relay.inject_event(CHANNEL, 2, None)  # an App Context event: not for this agent, not an error
    relay.inject_event(CHANNEL, 0, 12345)  # not ciphertext
    await provider.publish(CHANNEL, {"n": 1})
    await inbox.wait_for(1)
    assert logged(caplog, logging.DEBUG, "bus event ignored ") == [
        f"bus event ignored channel={CHANNEL} reason=event type 2 is not used by this agent"
    ]
    [dropped] = logged(caplog, logging.WARNING, "bus message dropped ")
    assert dropped.startswith(f"bus message dropped channel={CHANNEL} reason=")
    assert "12345" not in dropped


async def test_a_stored_message_history_cannot_read_is_logged_with_its_channel(
    make_bus: BusFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    intruder, provider = make_bus("intruder", cipher_key=None), make_bus("dr-smith")
    await intruder.publish(CHANNEL, {"text": "clear text"})
    await provider.publish(CHANNEL, {"n": 1})
    assert [env.message for env in await provider.history(CHANNEL)] == [{"n": 1}]
    [dropped] = logged(caplog, logging.WARNING, "history message dropped ")
    assert dropped == (
        f"history message dropped channel={CHANNEL}"
        " reason=message is not readable ciphertext: payload is not an encrypted string"
    )
    assert "clear text" not in dropped
