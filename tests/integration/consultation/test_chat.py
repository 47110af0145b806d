"""Chat between a patient agent and a provider agent on the real relay and clinic stand-in: both
ways, once per id, with delivery status and read receipts; wiped when the consultation is over;
bad chat input dropped with its reason."""

from __future__ import annotations

import json
import sqlite3
import uuid
from contextlib import closing
from datetime import UTC, datetime

import pytest

from telehealth_client import events
from telehealth_client.audit.trail import store_path
from telehealth_client.consultation.chat import ChatError, ConsultationChat
from telehealth_client.consultation.session import ConsultationSession
from telehealth_client.durability import Durable
from telehealth_client.protocol.messages import ConsultationState as S
from tests.support.consultation import (
    CONSULTATION,
    PATIENT,
    PROVIDER,
    SPECIALIST,
    DurablePair,
    Parts,
    RecordingHub,
    added,
    check_in_and_join,
    read,
    sent,
)
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration


class Pair:
    def __init__(
        self,
        built: DurablePair,
        session: ConsultationSession,
        patient_hub: RecordingHub,
        provider_hub: RecordingHub,
    ) -> None:
        self.patient, self.provider, self.session = built.patient, built.provider, session
        self.patient_hub, self.provider_hub = patient_hub, provider_hub
        self.kiosk_store, self.provider_store = built.kiosk_store, built.provider_store

    @property
    def patient_chat(self) -> ConsultationChat:
        chat = self.patient.chat
        assert chat is not None
        return chat

    @property
    def provider_chat(self) -> ConsultationChat:
        return self.provider.chat(CONSULTATION)


async def joined_pair(parts: Parts) -> Pair:
    patient_hub, provider_hub = RecordingHub(), RecordingHub()
    built = await parts.durable_pair(patient_hub, provider_hub)
    session = await check_in_and_join(built.patient, built.provider, patient_hub, provider_hub)
    return Pair(built, session, patient_hub, provider_hub)


async def test_chat_both_ways_in_order_with_read_receipts(parts: Parts) -> None:
    pair = await joined_pair(parts)
    question = await pair.patient_chat.send("I have had a headache since Tuesday")
    assert question.status == "pending" and question.own
    await pair.patient_hub.wait_for(sent(question.id))
    await pair.provider_hub.wait_for(added(PATIENT))
    [seen] = pair.provider_chat.entries
    assert (seen.id, seen.text, seen.sender_role, seen.status) == (
        question.id,
        "I have had a headache since Tuesday",
        "patient",
        "sent",
    )

    answer = await pair.provider_chat.send("Any fever?")
    follow_up = await pair.provider_chat.send("And did you take anything for it?")
    await pair.patient_hub.wait_for(added(PROVIDER), count=2)
    patient_view = [(e.id, e.text) for e in pair.patient_chat.entries]
    provider_view = [(e.id, e.text) for e in pair.provider_chat.entries]
    assert (
        patient_view
        == provider_view
        == [
            (question.id, "I have had a headache since Tuesday"),
            (answer.id, "Any fever?"),
            (follow_up.id, "And did you take anything for it?"),
        ]
    )
    timetokens = [e.timetoken for e in pair.patient_chat.entries]
    assert all(t is not None for t in timetokens) and timetokens == sorted(timetokens)  # type: ignore[type-var]

    # The patient read up to the provider's first message only: that one and everything before it.
    receipt = await pair.patient_chat.mark_read(answer.id)
    assert receipt is not None
    await pair.provider_hub.wait_for(read(PATIENT, answer.id))
    assert pair.provider_chat.read_by(answer.id) == {PATIENT}
    assert pair.provider_chat.read_by(follow_up.id) == frozenset()
    # The provider read everything (the newest by default).
    assert await pair.provider_chat.mark_read() is not None
    await pair.patient_hub.wait_for(read(PROVIDER, follow_up.id))
    assert pair.patient_chat.read_by(question.id) == {PROVIDER}
    assert await pair.provider_chat.mark_read() is None  # nothing newer to acknowledge

    # Each side audited what it sent and read (IDs only), in its own trail.
    await pair.kiosk_store.trail.wait_delivered(15.0)
    await pair.provider_store.trail.wait_delivered(15.0)
    kiosk_types = _event_types(pair.kiosk_store)
    provider_types = _event_types(pair.provider_store)
    assert {"CONSULTATION_SESSION_START", "PHI_MESSAGE_SENT", "PHI_MESSAGE_READ"} <= kiosk_types
    assert {"CONSULTATION_SESSION_START", "PHI_MESSAGE_SENT", "PHI_MESSAGE_READ"} <= provider_types


def _event_types(store: Durable) -> set[str]:
    with closing(sqlite3.connect(store_path(store.state_dir))) as db:
        return {json.loads(row[0])["eventType"] for row in db.execute("SELECT event FROM records")}


async def test_the_chat_is_wiped_from_both_sides_when_the_consultation_ends(parts: Parts) -> None:
    pair = await joined_pair(parts)
    mine = await pair.patient_chat.send("see you")
    await pair.provider_hub.wait_for(added(PATIENT))
    await pair.patient_hub.wait_for(sent(mine.id))
    provider_chat = pair.provider_chat
    patient_chat = pair.patient_chat
    await pair.provider.end(CONSULTATION, follow_up_required=False)
    await pair.patient_hub.wait_for(lambda e: isinstance(e, events.ChatWiped))
    await pair.provider_hub.wait_for(lambda e: isinstance(e, events.ChatWiped))
    assert patient_chat.entries == [] and provider_chat.entries == []
    assert pair.patient.chat is None
    with pytest.raises(ChatError) as refused:
        await patient_chat.send("too late")
    assert refused.value.field == "consultation"
    assert pair.kiosk_store.outbox.pending() == []


async def test_bad_chat_input_is_refused_or_dropped_with_its_reason(
    parts: Parts, log_lines: LogLines
) -> None:
    pair = await joined_pair(parts)
    with pytest.raises(ChatError) as refused:
        await pair.patient_chat.send("x" * 4001)
    assert (refused.value.field, refused.value.reason) == ("text", "must be 1-4000 characters, got 4001")
    with pytest.raises(ChatError) as unknown:
        await pair.patient_chat.mark_read(str(uuid.uuid4()))
    assert unknown.value.field == "upToId"
    assert pair.kiosk_store.outbox.pending() == []

    now = datetime.now(UTC).isoformat()
    # Published with the patient's own token and user ID: the relay lets it through, the
    # provider's chat must not.
    bus = pair.session.bus
    forged = {"type": "chat", "id": str(uuid.uuid4()), "senderId": PROVIDER, "senderRole": "provider",
              "text": "forged", "sentAt": now}  # fmt: skip
    await bus.publish(CONSULTATION, forged)
    await log_lines.wait_line("dropped", "field=senderId", "reason=must equal the publisher")
    wrong_role = {**forged, "id": str(uuid.uuid4()), "senderId": PATIENT}
    await bus.publish(CONSULTATION, wrong_role)
    await log_lines.wait_line("chat message dropped", "field=senderRole")
    too_long = {**wrong_role, "id": str(uuid.uuid4()), "senderRole": "patient", "text": "y" * 4001}
    await bus.publish(CONSULTATION, too_long)
    await log_lines.wait_line("dropped", "field=text")
    unknown_read = {"type": "chat-read", "id": str(uuid.uuid4()), "readerId": PATIENT,
                    "upToId": str(uuid.uuid4()), "readAt": now}  # fmt: skip
    await bus.publish(CONSULTATION, unknown_read)
    await log_lines.wait_line("chat message dropped", "field=upToId")
    # A good message after all of them arrives, and it is the only one shown.
    good = await pair.patient_chat.send("a real question")
    await pair.provider_hub.wait_for(added(PATIENT))
    assert [e.id for e in pair.provider_chat.entries] == [good.id]
    assert all("forged" not in line and "yyyy" not in line for line in log_lines.lines)


async def test_a_restarted_patient_endpoint_rebuilds_the_chat_from_history_once(parts: Parts) -> None:
    pair = await joined_pair(parts)
    first = await pair.patient_chat.send("first")
    second = await pair.provider_chat.send("second")
    third = await pair.patient_chat.send("third")
    await pair.provider_hub.wait_for(added(PATIENT), count=2)
    await pair.patient_hub.wait_for(added(PROVIDER))
    await pair.patient_hub.wait_for(sent(third.id))
    await pair.provider_chat.mark_read(first.id)
    await pair.patient_hub.wait_for(read(PROVIDER, first.id))
    # A lifecycle message after the chat: the restart's catch-up must still reach back before it.
    await pair.provider.start_consultation(CONSULTATION)
    await pair.patient_hub.wait_state(S.IN_PROGRESS)
    await pair.patient.session.flush()  # type: ignore[union-attr]
    # The kiosk stops (the agent restarts): the consultation stays on disk, the chat only in history.
    await pair.patient.aclose()
    await pair.kiosk_store.aclose()
    assert pair.patient.chat is None

    hub = RecordingHub()
    store = await parts.durable("kiosk-state")
    restarted = parts.patient(hub, durable=store)
    session = await restarted.resume()
    assert session is not None and session.consultation.state is S.IN_PROGRESS
    chat = restarted.chat
    assert chat is not None
    assert [(e.id, e.text, e.status) for e in chat.entries] == [
        (first.id, "first", "sent"),
        (second.id, "second", "sent"),
        (third.id, "third", "sent"),
    ]
    assert chat.read_by(first.id) == {PROVIDER}  # the receipt is history too
    fourth = await chat.send("fourth")
    await pair.provider_hub.wait_for(added(PATIENT), count=3)
    assert [e.id for e in pair.provider_chat.entries] == [first.id, second.id, third.id, fourth.id]


async def test_an_invited_specialist_reads_the_chat_from_the_providers_join(parts: Parts) -> None:
    pair = await joined_pair(parts)
    hello = await pair.patient_chat.send("hello")
    await pair.provider_hub.wait_for(added(PATIENT))
    specialist_hub = RecordingHub()
    specialist = await parts.provider(
        specialist_hub, SPECIALIST, durable=await parts.durable("specialist-state", SPECIALIST)
    )
    await pair.provider.invite(CONSULTATION, SPECIALIST, "specialist")
    await specialist_hub.wait_for(lambda e: isinstance(e, events.InvitationReceived))
    await specialist.accept(CONSULTATION)
    chat = specialist.chat(CONSULTATION)
    assert [(e.id, e.sender_id) for e in chat.entries] == [(hello.id, PATIENT)]
    question = await chat.send("A specialist's question")
    assert question.sender_role == "provider"  # an invited specialist writes as a provider
    await pair.patient_hub.wait_for(added(SPECIALIST))
    [entry] = [e for e in pair.patient_chat.entries if e.sender_id == SPECIALIST]
    assert (entry.id, entry.sender_role) == (question.id, "provider")
