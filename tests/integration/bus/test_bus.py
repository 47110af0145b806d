"""The bus on the real PubNub SDK against the development relay."""

from __future__ import annotations

import asyncio
import logging

import pytest

from telehealth_client.pubsub.bus import (
    AccessDeniedError,
    BusError,
    ConnectionStatus,
    Envelope,
    PresenceEvent,
)
from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_devstack.relay import Relay
from tests.support.bus import (
    BusFactory,
    Inbox,
    StatusLog,
    grant,
    subscribed,
)

CHANNEL = "consultation.dr-smith.patient-abc123"
MARKER = "MARKER-PHI-Jane-Doe-1961-04-12"


async def test_publish_reaches_another_agent_with_publisher_and_order(make_bus: BusFactory) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    inbox = Inbox()
    await subscribed(kiosk, CHANNEL, inbox)
    sent = [await provider.publish(CHANNEL, {"type": "chat", "n": n}) for n in range(5)]
    received = await inbox.wait_for(5)
    assert [env.message["n"] for env in received] == [0, 1, 2, 3, 4]
    assert {env.publisher for env in received} == {"dr-smith"}
    assert [env.timetoken for env in received] == [result.timetoken for result in sent]
    assert all(env.channel == CHANNEL for env in received)


async def test_what_the_relay_stores_and_logs_is_ciphertext(
    make_bus: BusFactory, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    inbox = Inbox()
    await subscribed(kiosk, CHANNEL, inbox)
    await provider.publish(CHANNEL, {"type": "chat", "text": MARKER}, meta={"kind": "chat"})
    [envelope] = await inbox.wait_for(1)
    assert envelope.message["text"] == MARKER
    assert MARKER not in relay.dump_text()
    assert relay.stored_messages(CHANNEL), "the message was stored"
    assert MARKER not in caplog.text


async def test_a_message_under_the_previous_cipher_key_is_still_read(make_bus: BusFactory) -> None:
    rotated = make_bus("patient-abc123", cipher_key="key-q4", previous_cipher_keys=("key-q3",))
    old_sender = make_bus("dr-smith", cipher_key="key-q3")
    inbox = Inbox()
    await subscribed(rotated, CHANNEL, inbox)
    await old_sender.publish(CHANNEL, {"type": "chat", "text": "before rotation"})
    await rotated.publish(CHANNEL, {"type": "chat", "text": "after rotation"})
    received = await inbox.wait_for(2)
    assert [env.message["text"] for env in received] == ["before rotation", "after rotation"]
    history = await rotated.history(CHANNEL)
    assert [env.message["text"] for env in history] == ["before rotation", "after rotation"]


async def test_history_since_a_timetoken_pages_in_order(make_bus: BusFactory) -> None:
    provider = make_bus("dr-smith")
    results = [await provider.publish(CHANNEL, {"n": n}) for n in range(130)]
    await provider.publish(CHANNEL + ".video", {"type": "offer"}, store=False)
    everything = await provider.history(CHANNEL, limit=500)
    assert [env.message["n"] for env in everything] == list(range(130))
    assert all(env.publisher == "dr-smith" for env in everything)
    since = await provider.history(CHANNEL, since=results[119].timetoken)
    assert [env.message["n"] for env in since] == list(range(120, 130))
    # More newer messages than one page: paged forward, nothing skipped.
    since_start = await provider.history(CHANNEL, since=results[4].timetoken, limit=500)
    assert [env.message["n"] for env in since_start] == list(range(5, 130))
    # A limit takes the oldest after `since` (a catch-up continues from there) ...
    first = await provider.history(CHANNEL, since=results[4].timetoken, limit=110)
    assert [env.message["n"] for env in first] == list(range(5, 115))
    # ... and without `since`, the newest.
    latest = await provider.history(CHANNEL, limit=110)
    assert [env.message["n"] for env in latest] == list(range(20, 130))
    assert await provider.history(CHANNEL + ".video") == []


async def test_user_metadata_round_trip(make_bus: BusFactory) -> None:
    bus = make_bus("patient-abc123")
    assert await bus.get_user_metadata("patient-abc123") == {}
    consent = '{"granted": true, "expiresAt": null}'
    await bus.set_user_metadata("patient-abc123", {"consent_telehealth": consent})
    assert await bus.get_user_metadata("patient-abc123") == {"consent_telehealth": consent}


async def test_app_context_and_file_events_do_not_stop_delivery(make_bus: BusFactory, relay: Relay) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    inbox = Inbox()
    await subscribed(kiosk, CHANNEL, inbox)
    relay.inject_event(CHANNEL, 2, {"source": "objects", "type": "uuid", "event": "set", "data": {"id": "x"}})
    relay.inject_event(CHANNEL, 4, {"message": "file", "file": {"id": "f1", "name": "scan.pdf"}})
    await provider.publish(CHANNEL, {"type": "chat", "text": "after the events"})
    [envelope] = await inbox.wait_for(1)
    assert envelope.message["text"] == "after the events"
    assert kiosk.status == ConnectionStatus.CONNECTED


async def test_malformed_messages_are_dropped_with_a_reason_and_never_crash(
    make_bus: BusFactory, relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    clear_text_sender = make_bus("intruder", cipher_key=None)
    inbox = Inbox()
    await subscribed(kiosk, CHANNEL, inbox)
    caplog.set_level(logging.WARNING, logger="telehealth_client.pubsub.pubnub_bus")
    await clear_text_sender.publish(CHANNEL, {"type": "chat", "text": "forged clear text"})
    garbage = RotatingCryptoModule("another-key").encrypt('{"n": 1}')
    relay.inject_event(CHANNEL, 0, garbage)
    relay.inject_event(CHANNEL, 0, "x" * 40_000)
    relay.inject_event(CHANNEL, 0, 12345)
    await provider.publish(CHANNEL, {"type": "chat", "text": "valid"})
    received = await inbox.wait_for(1)
    assert [env.message["text"] for env in received] == ["valid"]
    reasons = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(reasons) == 4
    assert any("over the 32768-byte limit" in reason for reason in reasons)
    assert all("not readable ciphertext" in reason for reason in reasons if "limit" not in reason)


async def test_publishing_bad_messages_is_refused_before_sending(make_bus: BusFactory) -> None:
    bus = make_bus("dr-smith")
    with pytest.raises(BusError, match="over 32768"):
        await bus.publish(CHANNEL, {"text": "x" * 40_000})
    with pytest.raises(BusError, match="not JSON-serialisable"):
        await bus.publish(CHANNEL, {"when": object()})
    assert await bus.history(CHANNEL) == []


async def test_reconnects_after_the_relay_is_down_and_catches_up_exactly_once(
    make_bus: BusFactory, relay: Relay
) -> None:
    kiosk = make_bus("patient-abc123", reconnect_min_seconds=0.2, reconnect_max_seconds=1.0)
    provider = make_bus("dr-smith")
    inbox = Inbox()
    statuses = await subscribed(kiosk, CHANNEL, inbox)
    await provider.publish(CHANNEL, {"n": 0})
    await inbox.wait_for(1)

    await relay.stop()
    await statuses.wait_for(ConnectionStatus.RECONNECTING, within=15)

    async def publish_through_the_outage() -> None:
        # The provider keeps trying each message, in order, until the relay takes it.
        for n in range(1, 6):
            while True:
                try:
                    await provider.publish(CHANNEL, {"n": n})
                    break
                except BusError as exc:
                    assert exc.retryable
                    await asyncio.sleep(0.1)  # retry pacing, not synchronisation

    publishing = asyncio.create_task(publish_through_the_outage())
    await asyncio.sleep(10)  # the outage itself: the relay is down for 10 s, as specified
    assert statuses.statuses()[-1] == ConnectionStatus.RECONNECTING  # never "connected" meanwhile
    assert not publishing.done()
    mark = len(statuses.changes)
    await relay.start()
    await publishing
    for n in range(6, 11):
        await provider.publish(CHANNEL, {"n": n})
    received = await inbox.wait_for(11, within=20)
    assert [env.message["n"] for env in received] == list(range(11))
    caught_up = await statuses.wait_for(ConnectionStatus.CONNECTED, after=mark)
    assert caught_up.caught_up_from is not None
    assert statuses.statuses()[-2:] == [ConnectionStatus.RECONNECTING, ConnectionStatus.CONNECTED]


async def test_access_denied_is_reported_and_a_new_token_reconnects(
    make_bus: BusFactory, relay: Relay
) -> None:
    relay.enforce_access = True
    kiosk = make_bus("patient-abc123")
    statuses = StatusLog(kiosk)
    inbox = Inbox()
    await kiosk.subscribe([CHANNEL], inbox)
    denied = await statuses.wait_for(ConnectionStatus.ACCESS_DENIED)
    assert denied.reason == "access denied by Access Manager"
    with pytest.raises(AccessDeniedError):
        await kiosk.publish(CHANNEL, {"type": "chat"})

    kiosk.set_token(await grant(relay, "patient-abc123", CHANNEL))
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    provider = make_bus("dr-smith", token=await grant(relay, "dr-smith", CHANNEL))
    await provider.publish(CHANNEL, {"type": "chat", "text": "with a token"})
    [envelope] = await inbox.wait_for(1)
    assert envelope.publisher == "dr-smith"


async def test_presence_join_and_leave_reach_the_other_agent(make_bus: BusFactory) -> None:
    provider, kiosk = make_bus("dr-smith"), make_bus("patient-abc123")
    events: asyncio.Queue[PresenceEvent] = asyncio.Queue()
    statuses = StatusLog(provider)
    await provider.subscribe([CHANNEL], on_presence=events.put)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    kiosk_sub = await kiosk.subscribe([CHANNEL], Inbox())
    seen: list[tuple[str, str | None]] = []
    while ("leave", "patient-abc123") not in seen:
        event = await asyncio.wait_for(events.get(), 10)
        seen.append((event.action, event.user_id))
        if event == PresenceEvent(CHANNEL, "join", "patient-abc123", event.occupancy, event.timetoken):
            await kiosk_sub.close()
    assert ("join", "patient-abc123") in seen
    assert seen.index(("join", "patient-abc123")) < seen.index(("leave", "patient-abc123"))


async def test_dropped_connections_and_server_errors_recover_without_loss(
    make_bus: BusFactory, relay: Relay
) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    inbox = Inbox()
    statuses = await subscribed(kiosk, CHANNEL, inbox)
    await asyncio.wait_for(relay.wait_for_subscribers(1), 10)  # a long-poll to cut
    relay.fail_next(3, status=503)
    relay.drop_subscribers()
    outage = await statuses.wait_for(ConnectionStatus.RECONNECTING)
    for n in range(5):
        while True:
            try:
                await provider.publish(CHANNEL, {"n": n})
                break
            except BusError as exc:
                assert exc.retryable and exc.status_code == 503
    received = await inbox.wait_for(5)
    assert [env.message["n"] for env in received] == [0, 1, 2, 3, 4]
    await statuses.wait_for(ConnectionStatus.CONNECTED, after=statuses.changes.index(outage))


async def test_a_failing_handler_does_not_stop_the_next_delivery(make_bus: BusFactory) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    inbox = Inbox()

    async def explode(envelope: Envelope) -> None:
        if envelope.message.get("explode"):
            raise RuntimeError("handler bug")
        await inbox(envelope)

    statuses = StatusLog(kiosk)
    await kiosk.subscribe([CHANNEL], explode)
    await statuses.wait_for(ConnectionStatus.CONNECTED)
    await provider.publish(CHANNEL, {"explode": True})
    await provider.publish(CHANNEL, {"explode": False})
    [envelope] = await inbox.wait_for(1)
    assert envelope.message == {"explode": False}


async def test_closing_a_subscription_stops_its_deliveries(make_bus: BusFactory) -> None:
    kiosk, provider = make_bus("patient-abc123"), make_bus("dr-smith")
    kept, closed = Inbox(), Inbox()
    other = CHANNEL + ".files"
    statuses = await subscribed(kiosk, CHANNEL, kept)
    closing = await kiosk.subscribe([other], closed)
    await provider.publish(other, {"n": 1})
    await closed.wait_for(1)
    await closing.close()
    await provider.publish(other, {"n": 2})
    await provider.publish(CHANNEL, {"n": 3})
    await kept.wait_for(1)
    assert [env.message["n"] for env in closed.items] == [1]
    assert statuses.statuses()[-1] == ConnectionStatus.CONNECTED
