"""Interoperability with the real PubNub JavaScript SDK (Node), as the provider's browser app uses it.

The provider side is a browser app on the JS SDK; the agent is the Python SDK behind ``PubNubBus``.
Both ends run for real against the development relay: JS publishes with GET and the message in
the URL, both encrypt with the AES-256-CBC CryptoModule, and Access Manager tokens come from the
Python SDK's ``grant_token``.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from telehealth_devstack.relay import Relay
from tests.support.interop import BusFactory, Event, Inbox, PeerFactory, connected, grant_token

PROVIDER = "dr-smith"  # the JS SDK: the provider's browser app
PATIENT = "patient-abc123"  # the Python bus: the kiosk agent
CONSULTATION = f"consultation.{PROVIDER}.{PATIENT}"
VIDEO = f"{CONSULTATION}.video"
ANOTHER_CONSULTATION = f"consultation.{PROVIDER}.patient-zzz999"
NOW = "2026-11-22T14:03:07.123Z"
AIOHTTP_DEFAULT_MAX_LINE = 8190


def marker() -> str:
    """A recognisable stand-in for PHI: it must never appear on the relay in clear text."""
    return f"PHI-MARKER-{uuid.uuid4().hex}"


def chat(sender: str, role: str, text: str) -> dict[str, Any]:
    return {
        "type": "chat",
        "id": str(uuid.uuid4()),
        "senderId": sender,
        "senderRole": role,
        "text": text,
        "sentAt": NOW,
    }


def sdp_offer(secret: str, size: int = 9000) -> dict[str, Any]:
    """An offer the size of a browser's (audio + video, many codecs): over 8 kB of JSON."""
    lines = ["v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", f"s={secret}", "t=0 0"]
    ssrc = 0
    while sum(len(line) + 2 for line in lines) < size:
        ssrc += 1
        lines.append(f"a=ssrc:{1000 + ssrc} msid:stream-{ssrc} track-{ssrc} cname:kiosk{ssrc:04d}")
    return {"type": "offer", "senderId": PROVIDER, "timestamp": NOW, "sdp": "\r\n".join(lines) + "\r\n"}


def is_ciphertext(payload: Any) -> bool:
    """A CryptoModule payload as it travels: a base64 string of a ``PNED``-headed AES-CBC blob."""
    return isinstance(payload, str) and base64.b64decode(payload).startswith(b"PNED")


def is_message(channel: str) -> Any:
    return lambda e: e["event"] == "message" and e["channel"] == channel


async def test_js_receives_a_chat_the_bus_published_decrypted_with_the_publisher(
    relay: Relay, make_bus: BusFactory, js_peer: PeerFactory
) -> None:
    provider = await js_peer(PROVIDER)
    await provider.subscribe([CONSULTATION])
    kiosk = make_bus(PATIENT)
    secret = marker()
    message = chat(PATIENT, "patient", f"Chest pain since 9 this morning {secret}")

    sent = await kiosk.publish(CONSULTATION, message)

    received = await provider.event(is_message(CONSULTATION))
    assert received["message"] == message
    assert received["publisher"] == PATIENT
    assert int(received["timetoken"]) == sent.timetoken
    assert "error" not in received  # the JS CryptoModule decrypted it
    # The JS SDK would also show clear text: the proof of encryption is what the relay holds.
    [stored] = relay.stored_messages(CONSULTATION)
    assert is_ciphertext(stored.payload)
    assert secret not in relay.dump_text()


async def test_bus_receives_an_offer_the_js_sdk_sent_by_get_unstored_and_encrypted(
    relay: Relay, make_bus: BusFactory, js_peer: PeerFactory
) -> None:
    kiosk = make_bus(PATIENT)
    inbox = Inbox()
    await connected(kiosk, [VIDEO], inbox)
    provider = await js_peer(PROVIDER)
    secret = marker()
    offer = sdp_offer(secret)
    assert len(offer["sdp"]) > 9000

    answer = await provider.call("publish", channel=VIDEO, message=offer, storeInHistory=False)

    assert answer["event"] == "result", answer
    request = await provider.event(lambda e: e["event"] == "http" and e["op"] == "publish")
    assert request["method"] == "GET"
    assert request["targetBytes"] > AIOHTTP_DEFAULT_MAX_LINE  # the relay takes the long request line
    envelope = await inbox.message(lambda m: m.channel == VIDEO)
    assert envelope.message == offer
    assert envelope.publisher == PROVIDER
    assert envelope.timetoken == int(answer["timetoken"])
    assert relay.stored_messages(VIDEO) == []  # store=0: signaling never reaches history
    [delivered] = relay.recent_messages(VIDEO)
    assert is_ciphertext(delivered.payload)
    assert secret not in relay.dump_text()


async def test_history_reads_across_sdks_both_ways(
    relay: Relay, make_bus: BusFactory, js_peer: PeerFactory
) -> None:
    provider = await js_peer(PROVIDER)
    kiosk = make_bus(PATIENT)
    joined = {"action": "PROVIDER_JOINED", "providerId": PROVIDER, "state": "connecting", "timestamp": NOW}
    from_js = [joined, chat(PROVIDER, "provider", f"Good morning {marker()}")]
    from_python = chat(PATIENT, "patient", f"Hello doctor {marker()}")

    for message in from_js:
        answer = await provider.call("publish", channel=CONSULTATION, message=message)
        assert answer["event"] == "result", answer
    await kiosk.publish(CONSULTATION, from_python)

    history = await kiosk.history(CONSULTATION)
    assert [(e.message, e.publisher) for e in history] == [
        (from_js[0], PROVIDER),
        (from_js[1], PROVIDER),
        (from_python, PATIENT),
    ]
    fetched = await provider.call("fetch", channel=CONSULTATION)
    assert fetched["event"] == "result", fetched
    assert [(m["message"], m["publisher"]) for m in fetched["messages"]] == [
        (from_js[0], PROVIDER),
        (from_js[1], PROVIDER),
        (from_python, PATIENT),
    ]
    assert not any("error" in m for m in fetched["messages"])  # all decrypted
    assert [int(m["timetoken"]) for m in fetched["messages"]] == [e.timetoken for e in history]
    assert all(is_ciphertext(m.payload) for m in relay.stored_messages(CONSULTATION))


@pytest.mark.parametrize("enforce_access", [True], ids=["enforced"])
async def test_a_python_granted_token_lets_js_subscribe_and_publish(
    relay: Relay, make_bus: BusFactory, js_peer: PeerFactory
) -> None:
    js_token = await grant_token(
        relay, PROVIDER, read_write=[CONSULTATION, VIDEO], read=[f"{CONSULTATION}-pnpres"]
    )
    kiosk = make_bus(PATIENT, token=await grant_token(relay, PATIENT, read_write=[CONSULTATION]))
    inbox = Inbox()
    await connected(kiosk, [CONSULTATION], inbox, presence=False)
    provider = await js_peer(PROVIDER)

    # Without a token Access Manager refuses the subscribe; the token then lets it in.
    await provider.call("subscribe", channels=[CONSULTATION], withPresence=True)
    refused = await provider.event(
        lambda e: e["event"] == "status" and e["category"] == "PNConnectionErrorCategory"
    )
    assert refused["error"] == "PNAccessDeniedCategory"
    await provider.call("setToken", token=js_token)
    up = await provider.event(lambda e: e["event"] == "status" and e["category"] == "PNConnectedCategory")
    assert set(up["channels"]) == {CONSULTATION, f"{CONSULTATION}-pnpres"}

    message = chat(PROVIDER, "provider", "How are you feeling?")
    answer = await provider.call("publish", channel=CONSULTATION, message=message)
    assert answer["event"] == "result", answer
    received = await inbox.message(lambda m: m.channel == CONSULTATION)
    assert (received.message, received.publisher) == (message, PROVIDER)
    # The JS SDK's own subscription, under the token, gets it too.
    echoed = await provider.event(is_message(CONSULTATION))
    assert echoed["message"] == message


@pytest.mark.parametrize("enforce_access", [True], ids=["enforced"])
async def test_a_js_publish_outside_the_token_is_refused_and_never_delivered(
    relay: Relay, make_bus: BusFactory, js_peer: PeerFactory
) -> None:
    js_token = await grant_token(relay, PROVIDER, read_write=[CONSULTATION])
    # The kiosk may read both channels, so it would see anything that got through.
    kiosk_token = await grant_token(relay, PATIENT, read_write=[CONSULTATION], read=[ANOTHER_CONSULTATION])
    kiosk = make_bus(PATIENT, token=kiosk_token)
    inbox = Inbox()
    await connected(kiosk, [CONSULTATION, ANOTHER_CONSULTATION], inbox, presence=False)
    provider = await js_peer(PROVIDER, token=js_token)
    secret = marker()

    refused = await provider.call(
        "publish", channel=ANOTHER_CONSULTATION, message=chat(PROVIDER, "provider", secret)
    )

    assert refused["event"] == "error", refused
    assert refused["statusCode"] == 403
    assert refused["category"] == "PNAccessDeniedCategory"
    # A message on a channel the kiosk shares a long-poll with: when it arrives, anything published
    # before it would have arrived first.
    fence = chat(PROVIDER, "provider", "fence")
    answer = await provider.call("publish", channel=CONSULTATION, message=fence)
    assert answer["event"] == "result", answer
    await inbox.message(lambda m: m.message == fence)
    assert [m.message for m in inbox.messages] == [fence]
    assert relay.recent_messages(ANOTHER_CONSULTATION) == []
    assert secret not in relay.dump_text()


async def test_js_sees_the_bus_join_and_leave_the_consultation(
    make_bus: BusFactory, js_peer: PeerFactory
) -> None:
    provider = await js_peer(PROVIDER)
    await provider.subscribe([CONSULTATION], with_presence=True)
    kiosk = make_bus(PATIENT)

    await connected(kiosk, [CONSULTATION], Inbox())

    def presence(action: str) -> Any:
        return lambda e: (
            e["event"] == "presence"
            and e["channel"] == CONSULTATION
            and e["action"] == action
            and e["uuid"] == PATIENT
        )

    joined: Event = await provider.event(presence("join"))
    assert joined["occupancy"] == 2  # the provider and the kiosk
    await kiosk.aclose()
    left = await provider.event(presence("leave"))
    assert left["occupancy"] == 1
    assert int(left["timetoken"]) > int(joined["timetoken"])


async def test_js_reads_the_consent_record_the_python_side_wrote(
    make_bus: BusFactory, js_peer: PeerFactory
) -> None:
    clinic = make_bus("clinic")
    consent = {"granted": True, "expiresAt": "2027-01-01T00:00:00.000Z"}
    await clinic.set_user_metadata(PATIENT, {"consent_telehealth": json.dumps(consent)})
    provider = await js_peer(PROVIDER)

    # The provider app's consent check (seeds: verifyConsent), on SDK 12's objects API.
    found = await provider.call("getUUIDMetadata", uuid=PATIENT)
    missing = await provider.call("getUUIDMetadata", uuid="patient-unknown")

    assert found["event"] == "result", found
    assert json.loads(found["custom"]["consent_telehealth"]) == consent
    # No record is an error the app must treat as "no consent", not an empty record.
    assert (missing["event"], missing["statusCode"]) == ("error", 404)


async def test_the_bus_sees_the_js_sdk_join(make_bus: BusFactory, js_peer: PeerFactory) -> None:
    kiosk = make_bus(PATIENT)
    inbox = Inbox()
    await connected(kiosk, [CONSULTATION], inbox)
    provider = await js_peer(PROVIDER)

    await provider.subscribe([CONSULTATION], with_presence=True)

    joined = await inbox.presence_event(lambda p: p.action == "join" and p.user_id == PROVIDER)
    assert (joined.channel, joined.occupancy) == (CONSULTATION, 2)
