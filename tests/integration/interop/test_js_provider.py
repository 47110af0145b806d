"""The provider's browser side in its real SDK: ``tests/js/provider.mjs`` (PubNub JS SDK 12 in Node,
written from PROTOCOL.md) runs a consultation with a Python patient endpoint, encrypted, on the
development stack (the relay enforcing Access Manager, the clinic stand-in issuing the tokens).

The JS app fetches its own standing token from the clinic over HTTP, through the checks a browser
makes of a page on another origin (CORS); the Python patient gets its patient token, reads its
consent, and follows the consultation by decoding what the JS app sent.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from telehealth_client import events
from telehealth_client.consultation import state_file
from telehealth_client.consultation.patient import DeviceReport
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.protocol.messages import Summary
from telehealth_client.pubsub.bus import ConnectionStatus
from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_devstack.stack import DevStack
from tests.support.consultation import Parts, RecordingHub
from tests.support.interop import (
    CONSULTATION,
    DEPARTMENT,
    JS_PROVIDER,
    PAGE_ORIGIN,
    PATIENT,
    SENDER_TIME,
    STEP,
    WAIT,
    Event,
    JsPeer,
    PeerFactory,
    app_event,
    appointment,
    click,
)

pytestmark = pytest.mark.integration

WAITING_ROOM = f"waiting-room.{JS_PROVIDER}"
PROVIDER_NOTIFICATIONS = f"notification.{JS_PROVIDER}"
PATIENT_NOTIFICATIONS = f"notification.{PATIENT}"
DEVICES = DeviceReport(camera="pass", microphone="warn", speaker="pass", network="audio-only")
# Words only a decrypted lifecycle message or notification holds: never on the relay in clear.
CLEAR_TEXT = (
    "PATIENT_CHECKED_IN",
    "PATIENT_READY",
    "QUEUE_UPDATE",
    "PROVIDER_JOINED",
    "PROVIDER_READY",
    "CONSULTATION_STARTED",
    "WRAP_UP_STARTED",
    "CONSULTATION_ENDED",
    "CONSULTATION_CANCELLED",
    "DEVICE_STATUS",
    "followUpRequired",
)


def is_ciphertext(payload: Any) -> bool:
    """A CryptoModule payload as it travels: a base64 string of a ``PNED``-headed AES-CBC blob."""
    return isinstance(payload, str) and base64.b64decode(payload).startswith(b"PNED")


def message(channel: str, action: str, publisher: str) -> Any:
    """A raw message the JS SDK delivered (decrypted) with its ``action`` or notification ``type``."""
    return lambda e: (
        e["event"] == "message"
        and e["channel"] == channel
        and e["publisher"] == publisher
        and action in (e["message"].get("action"), e["message"].get("type"))
    )


def dropped(provider: JsPeer) -> list[Event]:
    return [e for e in provider.events if e["event"] == "dropped"]


def sent_by(
    stack: DevStack, publisher: str, channel: str, *, timestamped: bool = True
) -> list[dict[str, Any]]:
    """What ``publisher`` stored on ``channel``, decrypted, each ``timestamp`` checked and removed;
    with ``timestamped=False``, checked absent (the seeds' notifications carry none)."""
    crypto = RotatingCryptoModule(stack.keys.cipher_key)
    found = []
    for stored in stack.relay.stored_messages(channel):
        if stored.publisher == publisher:
            message = crypto.decrypt(stored.payload)
            if timestamped:
                assert SENDER_TIME.fullmatch(message.pop("timestamp")), message
            else:
                assert "timestamp" not in message, message
            found.append(message)
    return found


def assert_stored_encrypted(stack: DevStack, secret: str, *channels: str) -> None:
    """What the relay stored is PNED ciphertext; no message word or the secret is anywhere in it."""
    relay = stack.relay
    for channel in channels:
        stored = relay.stored_messages(channel)
        assert stored, f"nothing stored on {channel}"
        assert all(is_ciphertext(m.payload) for m in stored), channel
    held = relay.dump_text()
    assert secret not in held
    assert [word for word in CLEAR_TEXT if word in held] == []


async def test_the_js_provider_app_gets_its_standing_token_as_a_page_on_another_origin(
    stack: DevStack, js_provider: PeerFactory
) -> None:
    provider = await js_provider()

    ready = await provider.event(app_event("ready"))
    # Through a browser's CORS checks (preflight, then the answer's allowed origin): the token
    # the clinic gave the page let it subscribe to its waiting room and notifications with presence.
    assert ready["pageOrigin"] == PAGE_ORIGIN
    assert ready["ttlMinutes"] == 60
    assert ready["channels"] == [WAITING_ROOM, PROVIDER_NOTIFICATIONS]
    assert sorted(stack.relay.occupants(WAITING_ROOM)) == [JS_PROVIDER]


async def test_a_refused_token_is_a_status_the_page_can_read(js_provider: PeerFactory) -> None:
    provider = await js_provider(credential="dev-provider-not-a-known-credential", ready=False)

    # The refusal carries CORS headers too: the page sees 401, not an opaque network failure.
    refused = await provider.event(app_event("fatal"))
    assert (refused["stage"], refused.get("statusCode")) == ("token", 401), refused
    await provider.exited(WAIT)  # it leaves after a fatal error


async def test_a_js_provider_app_runs_a_whole_consultation_with_a_python_patient(
    stack: DevStack, parts: Parts, js_provider: PeerFactory
) -> None:
    provider = await js_provider()
    await parts.record_consent(patient=PATIENT)
    hub = RecordingHub()
    patient = parts.patient(hub)
    await patient.report_devices(DEVICES)  # the kiosk's last device check, published at check-in
    appointment_id = appointment()

    session = await patient.check_in(
        appointment_id=appointment_id, patient_id=PATIENT, provider_id=JS_PROVIDER, department_id=DEPARTMENT
    )

    checked_in = await provider.event(app_event("checkedIn"), within=STEP)
    assert (checked_in["consultationId"], checked_in["patientId"], checked_in["publisher"]) == (
        CONSULTATION,
        PATIENT,
        PATIENT,
    )
    assert checked_in["appointmentId"] == appointment_id
    ready = await provider.event(message(PROVIDER_NOTIFICATIONS, "PATIENT_READY", PATIENT), within=STEP)
    assert (ready["message"]["consultationId"], ready["message"]["appointmentId"]) == (
        CONSULTATION,
        appointment_id,
    )
    devices = await provider.event(app_event("deviceStatus", consultationId=CONSULTATION), within=STEP)
    assert (devices["camera"], devices["microphone"], devices["speaker"], devices["network"]) == (
        "pass",
        "warn",
        "pass",
        "audio-only",
    )
    await hub.wait_state(S.CHECKED_IN)

    queued = await click(provider, "queueUpdate", minutesPerPatient=5)
    assert queued["sent"] == 1
    [update] = await hub.wait_for(lambda e: isinstance(e, events.QueueUpdated))
    assert (update.position, update.estimated_wait_minutes) == (1, 0)
    await hub.wait_state(S.WAITING)

    joined = await click(provider, "join", consultationId=CONSULTATION)
    connecting = await hub.wait_state(S.CONNECTING)
    [provider_ready] = await hub.wait_for(lambda e: isinstance(e, events.ProviderReady))
    assert provider_ready.consultation_id == CONSULTATION
    started = await click(provider, "start", consultationId=CONSULTATION)
    in_progress = await hub.wait_state(S.IN_PROGRESS)
    wrap_up = await click(provider, "wrapUp", consultationId=CONSULTATION)
    wrapping_up = await hub.wait_state(S.WRAPPING_UP)
    ended = await click(provider, "end", consultationId=CONSULTATION, followUpRequired=True)
    completed = await hub.wait_state(S.COMPLETED)

    # Each state change came from the JS app's own publish.
    assert [int(a["timetoken"]) for a in (joined, started, wrap_up, ended)] == [
        connecting.timetoken,
        in_progress.timetoken,
        wrapping_up.timetoken,
        completed.timetoken,
    ]
    assert ended["summary"] == {"duration": 1, "followUpRequired": True}
    assert completed.summary == Summary(duration=1, follow_up_required=True)
    await hub.wait_for(lambda e: isinstance(e, events.EndpointIdle))
    assert patient.idle
    assert session.bus.status is ConnectionStatus.STOPPED
    assert state_file.load(parts.tmp_path / "kiosk") is None
    assert hub.states(CONSULTATION) == [
        "checked-in",
        "waiting",
        "connecting",
        "in-progress",
        "wrapping-up",
        "completed",
    ]
    # On the wire, all PNED ciphertext: the patient's DEVICE_STATUS then the app's four actions, and
    # the queue update and PROVIDER_READY on the patient's own channel, in PROTOCOL.md's exact shapes.
    actions = sent_by(stack, JS_PROVIDER, CONSULTATION)
    assert [m.publisher for m in stack.relay.stored_messages(CONSULTATION)] == [PATIENT] + [JS_PROVIDER] * 4
    assert actions == [
        {"action": "PROVIDER_JOINED", "providerId": JS_PROVIDER, "state": "connecting"},
        {"action": "CONSULTATION_STARTED", "providerId": JS_PROVIDER, "state": "in-progress"},
        {"action": "WRAP_UP_STARTED", "providerId": JS_PROVIDER, "state": "wrapping-up"},
        {
            "action": "CONSULTATION_ENDED",
            "providerId": JS_PROVIDER,
            "state": "completed",
            "summary": {"duration": 1, "followUpRequired": True},
        },
    ]
    # As the seeds' app sends them: no timestamp on either notification, and the kiosk took both.
    assert sent_by(stack, JS_PROVIDER, PATIENT_NOTIFICATIONS, timestamped=False) == [
        {
            "type": "QUEUE_UPDATE",
            "title": "Queue Update",
            "body": "You are number 1 in the queue.",
            "priority": "normal",
            "consultationId": CONSULTATION,
            "position": 1,
            "estimatedWaitMinutes": 0,
        },
        {
            "type": "PROVIDER_READY",
            "title": "Your Provider is Ready",
            "body": "Your consultation is about to begin.",
            "priority": "high",
            "consultationId": CONSULTATION,
        },
    ]
    assert_stored_encrypted(
        stack, appointment_id, WAITING_ROOM, CONSULTATION, PROVIDER_NOTIFICATIONS, PATIENT_NOTIFICATIONS
    )
    assert dropped(provider) == []  # the app accepted every message the Python patient sent


async def test_a_patient_who_leaves_the_queue_is_dropped_from_the_js_providers_queue(
    stack: DevStack, parts: Parts, js_provider: PeerFactory
) -> None:
    provider = await js_provider()
    await parts.record_consent(patient=PATIENT)
    hub = RecordingHub()
    patient = parts.patient(hub)
    appointment_id = appointment()
    await patient.check_in(
        appointment_id=appointment_id, patient_id=PATIENT, provider_id=JS_PROVIDER, department_id=DEPARTMENT
    )
    await provider.event(app_event("checkedIn", consultationId=CONSULTATION), within=STEP)
    await click(provider, "queueUpdate")
    await hub.wait_state(S.WAITING)

    await patient.leave()

    gone = await provider.event(app_event("cancelled", consultationId=CONSULTATION), within=STEP)
    assert (gone["cancelledBy"], gone["reason"]) == (PATIENT, "patient-left")
    # Before a provider joined, the cancel also reaches the waiting room, where the queue lives.
    early = await provider.event(message(WAITING_ROOM, "CONSULTATION_CANCELLED", PATIENT), within=STEP)
    assert (early["message"]["cancelledBy"], early["message"]["reason"]) == (PATIENT, "patient-left")
    cancelled = await hub.wait_state(S.CANCELLED)
    assert cancelled.cancel_reason == "patient-left"
    await hub.wait_for(lambda e: isinstance(e, events.EndpointIdle))
    assert patient.idle
    assert hub.states(CONSULTATION) == ["checked-in", "waiting", "cancelled"]

    assert (await click(provider, "queue"))["queue"] == []
    assert (await click(provider, "queueUpdate"))["sent"] == 0
    refused = await provider.call("join", within=STEP, consultationId=CONSULTATION)
    assert (refused["event"], refused["field"]) == ("error", "consultationId")
    assert refused["reason"] == "is not a consultation in this provider's queue"
    # Nothing was published for the refused join: the patient's cancel is all the channel holds.
    assert [m.publisher for m in stack.relay.stored_messages(CONSULTATION)] == [PATIENT]
    assert [
        update["type"] for update in sent_by(stack, JS_PROVIDER, PATIENT_NOTIFICATIONS, timestamped=False)
    ] == ["QUEUE_UPDATE"]
    assert_stored_encrypted(stack, appointment_id, WAITING_ROOM, CONSULTATION, PATIENT_NOTIFICATIONS)
    assert dropped(provider) == []
