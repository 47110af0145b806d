"""The real PubNub Python SDK against the relay: time, publish/subscribe, signal, history."""

from __future__ import annotations

import asyncio

from telehealth_devstack.relay import Relay
from tests.support.relay import ClientFactory, subscribed

CHANNEL = "consultation.prov1.pat1"


async def test_time_is_a_timetoken(make_client: ClientFactory) -> None:
    envelope = await make_client("alice").time().future()
    # 17 digits: 100 ns units since the epoch, as PubNub's timetokens.
    assert len(str(int(envelope.result))) == 17


async def test_a_message_published_by_one_client_reaches_the_other(make_client: ClientFactory) -> None:
    alice, bob = make_client("alice"), make_client("bob")
    inbox = await subscribed(bob, [CHANNEL, "other-channel"])

    sent = await alice.publish().channel(CHANNEL).message({"text": "hi"}).meta({"kind": "chat"}).future()

    received = await asyncio.wait_for(inbox.messages.get(), 5)
    assert received.message == {"text": "hi"}
    assert received.channel == CHANNEL
    assert received.publisher == "alice"
    assert received.user_metadata == {"kind": "chat"}
    assert received.timetoken == sent.result.timetoken


async def test_messages_on_several_channels_arrive_in_publish_order(make_client: ClientFactory) -> None:
    alice, bob = make_client("alice"), make_client("bob")
    inbox = await subscribed(bob, ["a", "b"])

    for index, channel in enumerate(["a", "b", "a", "b", "a"]):
        await alice.publish().channel(channel).message(index).future()

    got = [await asyncio.wait_for(inbox.messages.get(), 5) for _ in range(5)]
    assert [m.message for m in got] == [0, 1, 2, 3, 4]
    assert [m.channel for m in got] == ["a", "b", "a", "b", "a"]


async def test_post_publish_and_store_off(make_client: ClientFactory, relay: Relay) -> None:
    alice, bob = make_client("alice"), make_client("bob")
    inbox = await subscribed(bob, [CHANNEL])

    await alice.publish().channel(CHANNEL).message({"sdp": "v=0"}).use_post(True).should_store(False).future()

    received = await asyncio.wait_for(inbox.messages.get(), 5)
    assert received.message == {"sdp": "v=0"}
    assert relay.stored_messages(CHANNEL) == [], "store=0 must keep it out of history"


async def test_signal_is_delivered_as_a_signal(make_client: ClientFactory) -> None:
    alice, bob = make_client("alice"), make_client("bob")
    inbox = await subscribed(bob, [CHANNEL])

    await alice.signal().channel(CHANNEL).message("typing").future()

    received = await asyncio.wait_for(inbox.signals.get(), 5)
    assert (received.message, received.publisher) == ("typing", "alice")


async def test_an_encrypted_get_publish_longer_than_8_kb_goes_through(
    make_client: ClientFactory, relay: Relay
) -> None:
    alice = make_client("alice", cipher_key="a-cipher-key")
    bob = make_client("bob", cipher_key="a-cipher-key")
    inbox = await subscribed(bob, [CHANNEL])
    offer = {"type": "offer", "sdp": "a=candidate " * 800}  # ~9.6 kB before encryption and escaping

    await alice.publish().channel(CHANNEL).message(offer).future()

    received = await asyncio.wait_for(inbox.messages.get(), 5)
    assert received.message == offer
    stored = relay.stored_messages(CHANNEL)[0].payload
    assert isinstance(stored, str) and "candidate" not in stored, "the relay holds ciphertext"


async def test_fetch_messages_with_meta_and_uuid(make_client: ClientFactory) -> None:
    alice = make_client("alice")
    tokens = []
    for index in range(5):
        sent = await alice.publish().channel(CHANNEL).message({"n": index}).meta({"i": index}).future()
        tokens.append(sent.result.timetoken)

    everything = await (
        alice.fetch_messages().channels([CHANNEL]).include_meta(True).include_uuid(True).future()
    )
    items = everything.result.channels[CHANNEL]
    assert [m.message for m in items] == [{"n": i} for i in range(5)]
    assert [m.meta for m in items] == [{"i": i} for i in range(5)]
    assert {m.uuid for m in items} == {"alice"}
    assert [int(m.timetoken) for m in items] == tokens

    # start is exclusive, end inclusive; max keeps the newest.
    ranged = await alice.fetch_messages().channels([CHANNEL]).start(tokens[4]).end(tokens[1]).future()
    assert [m.message["n"] for m in ranged.result.channels[CHANNEL]] == [1, 2, 3]
    newest = await alice.fetch_messages().channels([CHANNEL]).maximum_per_channel(2).future()
    assert [m.message["n"] for m in newest.result.channels[CHANNEL]] == [3, 4]
    # Only end: the oldest from there on, so a reader can page forward.
    forward = await alice.fetch_messages().channels([CHANNEL]).end(tokens[1]).maximum_per_channel(2).future()
    assert [m.message["n"] for m in forward.result.channels[CHANNEL]] == [1, 2]


async def test_fetch_messages_decrypts_with_the_crypto_module(make_client: ClientFactory) -> None:
    alice = make_client("alice", cipher_key="k1")
    await alice.publish().channel(CHANNEL).message({"text": "secret"}).future()

    fetched = await alice.fetch_messages().channels([CHANNEL]).decrypt_messages(True).future()

    assert [m.message for m in fetched.result.channels[CHANNEL]] == [{"text": "secret"}]


async def test_history_v2_and_delete(make_client: ClientFactory, relay: Relay) -> None:
    alice = make_client("alice", with_secret_key=True)
    tokens = [(await alice.publish().channel(CHANNEL).message(i).future()).result.timetoken for i in range(4)]

    history = await alice.history().channel(CHANNEL).count(3).include_timetoken(True).future()
    assert [item.entry for item in history.result.messages] == [1, 2, 3]
    assert [item.timetoken for item in history.result.messages] == tokens[1:]

    await alice.delete_messages().channel(CHANNEL).start(tokens[3]).end(tokens[1]).future()

    assert [m.payload for m in relay.stored_messages(CHANNEL)] == [0, 3]
