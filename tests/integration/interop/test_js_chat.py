"""Chat between the provider's browser app on the real JS SDK (``tests/js/provider.mjs``, written from
PROTOCOL.md's Chat section) and a Python patient endpoint with its durable outbox, on the
development stack: both ways, read receipts both ways, each message shown once by its id, and
only ciphertext on the relay."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from telehealth_client.consultation.chat import ConsultationChat
from telehealth_client.consultation.session import ConsultationSession
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_devstack.stack import DevStack
from tests.support.consultation import Parts, RecordingHub, added, read, sent
from tests.support.interop import (
    CONSULTATION,
    DEPARTMENT,
    JS_PROVIDER,
    PATIENT,
    SENDER_TIME,
    STEP,
    JsPeer,
    PeerFactory,
    app_event,
    appointment,
    click,
)

pytestmark = pytest.mark.integration

CHAT_KEYS = {"type", "id", "senderId", "senderRole", "text", "sentAt"}
READ_KEYS = {"type", "id", "readerId", "upToId", "readAt"}


def page_chats(provider: JsPeer) -> list[dict[str, Any]]:
    return [e for e in provider.events if e["event"] == "chat"]


def stored_chat(stack: DevStack) -> list[tuple[str | None, dict[str, Any]]]:
    """(publisher, decrypted message) of every chat and chat-read the relay stored, in order."""
    crypto = RotatingCryptoModule(stack.keys.cipher_key)
    found = []
    for stored in stack.relay.stored_messages(CONSULTATION):
        message = crypto.decrypt(stored.payload)
        if message.get("type") in ("chat", "chat-read"):
            found.append((stored.publisher, message))
    return found


async def joined(
    stack: DevStack, parts: Parts, js_provider: PeerFactory
) -> tuple[JsPeer, ConsultationSession, ConsultationChat, RecordingHub]:
    """The JS provider app and a Python patient (with its outbox) in a consultation it joined."""
    provider = await js_provider()
    await parts.record_consent(patient=PATIENT)
    hub = RecordingHub()
    patient = parts.patient(hub, durable=await parts.durable("kiosk-state"))
    session = await patient.check_in(
        appointment_id=appointment(), patient_id=PATIENT, provider_id=JS_PROVIDER, department_id=DEPARTMENT
    )
    await provider.event(app_event("checkedIn", consultationId=CONSULTATION), within=STEP)
    await click(provider, "queueUpdate")
    await hub.wait_state(S.WAITING)
    await click(provider, "join", consultationId=CONSULTATION)
    await hub.wait_state(S.CONNECTING)
    chat = patient.chat
    assert chat is not None
    return provider, session, chat, hub


async def test_the_js_provider_app_and_a_python_patient_chat_both_ways_with_read_receipts(
    stack: DevStack, parts: Parts, js_provider: PeerFactory
) -> None:
    provider, _, chat, hub = await joined(stack, parts, js_provider)

    # The page writes; the patient shows it as the provider's, at the timetoken the page got.
    question = await click(provider, "chat", consultationId=CONSULTATION, text="How is the pain today? 🙂")
    await hub.wait_for(added(JS_PROVIDER))
    [shown] = chat.entries
    assert (shown.id, shown.sender_id, shown.sender_role, shown.text, shown.status, shown.own) == (
        question["messageId"],
        JS_PROVIDER,
        "provider",
        "How is the pain today? 🙂",
        "sent",
        False,
    )
    assert shown.timetoken == int(question["timetoken"])

    # The patient reads it; the page reports the receipt.
    receipt = await chat.mark_read()
    assert receipt is not None
    page_read = await provider.event(app_event("chatRead", upToId=question["messageId"]), within=STEP)
    assert (page_read["id"], page_read["readerId"], page_read["consultationId"]) == (
        receipt,
        PATIENT,
        CONSULTATION,
    )

    # The patient writes; the page reports it once, as the patient's.
    answer = await chat.send("Better since this morning")
    page_chat = await provider.event(app_event("chat", id=answer.id), within=STEP)
    assert (page_chat["senderId"], page_chat["senderRole"], page_chat["text"]) == (
        PATIENT,
        "patient",
        "Better since this morning",
    )
    assert SENDER_TIME.fullmatch(page_chat["sentAt"]), page_chat
    await hub.wait_for(sent(answer.id))  # the page may see it before the publish's answer is back
    sent_entry = chat.get(answer.id)
    assert sent_entry is not None and sent_entry.status == "sent"
    assert int(page_chat["timetoken"]) == sent_entry.timetoken

    # The page reads everything (the newest by default); the patient sees who read what.
    page_receipt = await click(provider, "chatRead", consultationId=CONSULTATION)
    assert page_receipt["upToId"] == answer.id
    await hub.wait_for(read(JS_PROVIDER, answer.id))
    assert chat.read_by(answer.id) == {JS_PROVIDER}
    # The page's own reading of its question is no receipt; the patient's is.
    assert chat.read_by(question["messageId"]) == {PATIENT}
    assert [e.id for e in chat.entries] == [question["messageId"], answer.id]

    # On the relay, PNED ciphertext in PROTOCOL.md's exact shapes, each message once.
    stored = stored_chat(stack)
    assert [(publisher, m["type"], m["id"]) for publisher, m in stored] == [
        (JS_PROVIDER, "chat", question["messageId"]),
        (PATIENT, "chat-read", receipt),
        (PATIENT, "chat", answer.id),
        (JS_PROVIDER, "chat-read", page_receipt["receiptId"]),
    ]
    for _, message in stored:
        assert set(message) == (CHAT_KEYS if message["type"] == "chat" else READ_KEYS), message
    assert stored[0][1]["senderRole"] == "provider" and stored[3][1]["upToId"] == answer.id
    held = stack.relay.dump_text()
    assert "pain today" not in held and "this morning" not in held
    assert [e for e in provider.events if e["event"] == "dropped"] == []


async def test_the_js_provider_app_shows_a_retried_chat_once_and_drops_bad_chat_with_its_reason(
    stack: DevStack, parts: Parts, js_provider: PeerFactory
) -> None:
    provider, session, chat, _ = await joined(stack, parts, js_provider)
    message = await chat.send("first try")
    await provider.event(app_event("chat", id=message.id), within=STEP)

    # The same id published again (an outbox retry whose first answer was lost) and bad chat, each
    # with the patient's own token: the relay lets them through, the page must not show them.
    now = datetime.now(UTC).isoformat()
    retry = {"type": "chat", "id": message.id, "senderId": PATIENT, "senderRole": "patient",
             "text": "first try", "sentAt": now}  # fmt: skip
    await session.bus.publish(CONSULTATION, retry)
    forged = {**retry, "id": str(uuid.uuid4()), "senderId": JS_PROVIDER, "senderRole": "provider"}
    await session.bus.publish(CONSULTATION, forged)
    wrong_role = {**retry, "id": str(uuid.uuid4()), "senderRole": "provider"}
    await session.bus.publish(CONSULTATION, wrong_role)
    too_long = {**retry, "id": str(uuid.uuid4()), "text": "y" * 4001}
    await session.bus.publish(CONSULTATION, too_long)
    unknown_read = {"type": "chat-read", "id": str(uuid.uuid4()), "readerId": PATIENT,
                    "upToId": str(uuid.uuid4()), "readAt": now}  # fmt: skip
    await session.bus.publish(CONSULTATION, unknown_read)
    # A good message after all of them: the channel is ordered, so each was handled before it.
    last = await chat.send("second message")
    await provider.event(app_event("chat", id=last.id), within=STEP)

    assert [e["id"] for e in page_chats(provider)] == [message.id, last.id]
    dropped = [(e["field"], e["reason"]) for e in provider.events if e["event"] == "dropped"]
    assert dropped == [
        ("senderId", "must equal the publisher"),
        ("senderRole", "does not match the sender's role in this consultation"),
        ("text", "must be 1-4000 characters, not blank"),
        ("upToId", "names no chat message of this consultation"),
    ]
    assert all(
        "yyyy" not in str(e) and "first try" not in str(e) for e in provider.events if e["event"] == "dropped"
    )

    refused = await provider.call("chat", within=STEP, consultationId=CONSULTATION, text=" ")
    assert (refused["event"], refused["field"], refused["reason"]) == ("error", "text", "must not be blank")
    refused = await provider.call(
        "chatRead", within=STEP, consultationId=CONSULTATION, upToId=str(uuid.uuid4())
    )
    assert (refused["event"], refused["field"]) == ("error", "upToId")
    published = [message.id, message.id, forged["id"], wrong_role["id"], too_long["id"], unknown_read["id"]]
    assert [m["id"] for _, m in stored_chat(stack)] == [*published, last.id]
