"""Encryption on the wire: a client with NO cipher key, signed with the stack's secret key (so it
may read every channel, ``audit.{org}`` included), follows a whole consultation with chat, read
receipts, queue updates, device status, a signaling message, an emergency and its resolution. Every
payload it is handed, and every payload the relay took on those channels, must be CryptoModule
ciphertext: a base64 string whose bytes start with ``PNED``. A client with a crypto module would
accept clear text silently, so only the raw payloads prove it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from telehealth_client import events
from telehealth_client.consultation.patient import DeviceReport
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.protocol.messages import Offer, encode
from telehealth_client.pubsub.bus import ConnectionStatus, Envelope
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_devstack.stack import DevStack
from tests.support.bus import Inbox, StatusLog
from tests.support.consultation import (
    CHECK_IN,
    CONSULTATION,
    DEPARTMENT,
    PATIENT,
    PROVIDER,
    SPECIALIST,
    WAIT,
    Parts,
    RecordingHub,
    bus_template,
)
from tests.support.phi import decrypt, is_cryptomodule_ciphertext

pytestmark = pytest.mark.integration

# A syntactically plausible SDP: the relay and the bus only carry it.
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


def watched_channels(stack: DevStack) -> list[str]:
    return [
        CONSULTATION,
        channels.video(CONSULTATION),
        channels.notification(PATIENT),
        channels.notification(PROVIDER),
        channels.notification(SPECIALIST),
        channels.waiting_room(PROVIDER),
        channels.emergency(DEPARTMENT),
        channels.audit(stack.organization_id),
    ]


async def received_all(inbox: Inbox, timetokens: set[int]) -> list[Envelope]:
    """What ``inbox`` holds once it holds every one of ``timetokens``."""
    while not timetokens <= {e.timetoken for e in inbox.items}:
        await inbox.wait_for(len(inbox.items) + 1, within=WAIT)
    return list(inbox.items)


def kind_of(message: Any) -> str:
    """What a decrypted payload is: a chat or signal ``type``, an ``action``, or an audit event type."""
    if "eventType" in message:
        return f"audit {message['eventType']}"
    if "action" in message:
        return str(message["action"])
    return str(message["type"])


async def test_a_client_without_the_cipher_key_sees_only_cryptomodule_ciphertext(
    kept_parts: Parts,
) -> None:
    parts = kept_parts
    stack = parts.stack
    watched = watched_channels(stack)
    # No cipher key: payloads reach it as they are on the wire. The secret key lets it read all.
    tap = PubNubBus(
        replace(bus_template(stack, "wire-tap"), cipher_key=None, secret_key=stack.keys.secret_key)
    )
    inbox = Inbox()
    try:
        status = StatusLog(tap)
        await tap.subscribe(watched, inbox)
        await status.wait_for(ConnectionStatus.CONNECTED)
        await run_a_consultation(parts)
        before = [m for channel in watched for m in stack.relay.recent_messages(channel)]
        seen = await received_all(inbox, {m.timetoken for m in before})
    finally:
        await tap.aclose()
    on_relay = [m for channel in watched for m in stack.relay.recent_messages(channel)]

    # What the relay took on every watched channel, .video (store=0) included.
    clear_on_relay = [
        (m.channel, type(m.payload).__name__) for m in on_relay if not is_cryptomodule_ciphertext(m.payload)
    ]
    assert clear_on_relay == []
    # What the key-less subscriber was handed: every one of them, each still ciphertext (an audit
    # event delivered late may add to both lists).
    assert {m.timetoken for m in before} <= {e.timetoken for e in seen} <= {m.timetoken for m in on_relay}
    clear_seen = [
        (e.channel, type(e.message).__name__) for e in seen if not is_cryptomodule_ciphertext(e.message)
    ]
    assert clear_seen == []

    # And they are what the consultation published: every kind of message is among them.
    kinds = Counter(kind_of(decrypt(stack, e.message)) for e in seen)
    expected = {
        "PATIENT_CHECKED_IN",
        "PATIENT_READY",
        "QUEUE_UPDATE",
        "DEVICE_STATUS",
        "PROVIDER_JOINED",
        "PROVIDER_READY",
        "CONSULTATION_STARTED",
        "offer",
        "chat",
        "chat-read",
        "EMERGENCY_ESCALATION",
        "EMERGENCY_RESOLVED",
        "WRAP_UP_STARTED",
        "CONSULTATION_ENDED",
        "audit PHI_MESSAGE_SENT",
        "audit PHI_MESSAGE_READ",
        "audit EMERGENCY_ESCALATION_TRIGGERED",
    }
    assert expected <= set(kinds), sorted(expected - set(kinds))
    assert kinds["chat"] == 2 and kinds["chat-read"] == 2


async def run_a_consultation(parts: Parts) -> None:
    patient_hub, provider_hub = RecordingHub(), RecordingHub()
    built = await parts.durable_pair(patient_hub, provider_hub)
    patient, provider = built.patient, built.provider
    await patient.check_in(**CHECK_IN)
    await provider_hub.wait_state(S.CHECKED_IN)
    assert await provider.send_queue_updates() == 1
    await patient_hub.wait_state(S.WAITING)
    await patient.report_devices(
        DeviceReport(camera="pass", microphone="pass", speaker="warn", network="video")
    )
    await provider.join(CONSULTATION)
    await patient_hub.wait_state(S.CONNECTING)
    await provider.start_consultation(CONSULTATION)
    await patient_hub.wait_state(S.IN_PROGRESS)
    offer = Offer(sender_id=PROVIDER, timestamp=datetime.now(UTC), sdp=SDP)
    await provider.bus.publish(channels.video(CONSULTATION), encode(offer), store=False)

    patient_chat, provider_chat = patient.chat, provider.chat(CONSULTATION)
    assert patient_chat is not None
    await patient_chat.send("My left arm feels numb")
    await provider_chat.send("How long has it felt that way?")
    await patient_hub.wait_for(lambda e: isinstance(e, events.ChatMessageAdded) and e.sender_id == PROVIDER)
    await provider_hub.wait_for(lambda e: isinstance(e, events.ChatMessageAdded) and e.sender_id == PATIENT)
    assert await patient_chat.mark_read() is not None
    assert await provider_chat.mark_read() is not None
    await provider_hub.wait_for(lambda e: isinstance(e, events.ChatReadUpdated) and e.reader_id == PATIENT)
    await patient_hub.wait_for(lambda e: isinstance(e, events.ChatReadUpdated) and e.reader_id == PROVIDER)

    desk = provider.emergency
    assert desk is not None
    escalation = await desk.escalate(CONSULTATION, "urgent", "Sudden numbness of the left arm")
    await desk.resolve(escalation.id, "Seen by the stroke team")
    assert await built.provider_store.outbox.wait_drained(WAIT)

    await provider.wrap_up(CONSULTATION)
    await provider.end(CONSULTATION, follow_up_required=False)
    await patient_hub.wait_for(lambda e: isinstance(e, events.ChatWiped))
    await provider_hub.wait_for(lambda e: isinstance(e, events.ChatWiped))
    assert await built.kiosk_store.trail.wait_delivered(WAIT)
    assert await built.provider_store.trail.wait_delivered(WAIT)
