"""A provider cart follows every consultation in its queue (issue 19): 150 patients checked in with
real tokens through the real SDK, each one's chat and leave reach the one provider endpoint; past
the endpoint's bound a check-in gets a clear error, a log line and ``ConsultationNotFollowed``; a
restarted cart replays its waiting room without the consultations that ended or were cancelled."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from telehealth_client import events
from telehealth_client.consultation.provider import LISTED_CONSULTATIONS_MAX, ProviderEndpoint
from telehealth_client.consultation.session import now
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import (
    ChatMessage,
    ConsultationCancelled,
    PatientCheckedIn,
    encode,
)
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_devstack.clinic import RateLimit
from telehealth_devstack.stack import DevStack
from tests.support.consultation import PROVIDER, SPECIALIST, Parts, RecordingHub
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration

WAITING = 150
# Check-ins made at once: each is a consent write, a token mint and a publish.
CONCURRENCY = 25


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    """The consultation stack, its kiosk allowed the hundreds of patient tokens these tests mint at
    once (the clinic's default limit would answer 429 after a few)."""
    limit = RateLimit(per_minute=100_000, burst=1_000)
    async with DevStack(providers=(PROVIDER, SPECIALIST), patient_token_limit=limit) as running:
        yield running


class Patient:
    """One patient's side, as its kiosk's bus does it: a real token, the real SDK."""

    def __init__(self, patient_id: str, bus: PubNubBus) -> None:
        self.id = patient_id
        self.bus = bus
        self.consultation = channels.consultation(PROVIDER, patient_id)

    async def check_in(self) -> None:
        message = PatientCheckedIn(
            appointment_id=f"appt-{self.id}",
            patient_id=self.id,
            consultation_id=self.consultation,
            timestamp=now(),
        )
        await self.bus.publish(channels.waiting_room(PROVIDER), encode(message))

    async def chat(self) -> str:
        message_id = str(uuid.uuid4())
        chat = ChatMessage(
            id=message_id, sender_id=self.id, sender_role="patient", text="hello", sent_at=now()
        )
        await self.bus.publish(self.consultation, encode(chat))
        return message_id

    async def leave(self) -> None:
        """As the patient endpoint leaves before a provider joined: on both channels."""
        cancel = encode(ConsultationCancelled(cancelled_by=self.id, reason="patient-left", timestamp=now()))
        await self.bus.publish(self.consultation, cancel)
        await self.bus.publish(channels.waiting_room(PROVIDER), cancel)


async def patients(parts: Parts, count: int, prefix: str = "pat") -> list[Patient]:
    """``count`` patients with consent and a patient token each, minted by the kiosk's credential."""
    clinic = parts.clinic()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int) -> Patient:
        patient_id = f"{prefix}-{index:03d}"
        async with gate:
            await clinic.record_consent(patient_id, True, None)
            grant = await clinic.request_token(
                patient_id, "patient", providerId=PROVIDER, appointmentId=f"appt-{patient_id}"
            )
        return Patient(patient_id, parts.raw_bus(patient_id, grant.token))

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def each(items: list[Patient], action: Callable[[Patient], Any]) -> list[Any]:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(patient: Patient) -> Any:
        async with gate:
            return await action(patient)

    return list(await asyncio.gather(*(one(p) for p in items)))


def state_of(consultation_id: str, state: S) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, events.StateChanged) and e.consultation_id == consultation_id and e.state is state
    )


def is_state(state: S) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, events.StateChanged) and e.state is state


async def test_one_provider_follows_150_waiting_consultations_chat_and_leave(
    parts: Parts, log_lines: LogLines
) -> None:
    hub = RecordingHub()
    provider = await parts.provider(hub)
    queue = await patients(parts, WAITING)

    await each(queue, Patient.check_in)
    await hub.wait_for(is_state(S.CHECKED_IN), count=WAITING, within=60.0)
    waiting = provider.queue
    assert sorted(w.consultation_id for w in waiting) == sorted(p.consultation for p in queue)
    assert all(w.present for w in waiting)  # a live check-in stands for the patient's join

    received: dict[str, list[str]] = {p.consultation: [] for p in queue}
    arrived = asyncio.Event()

    def recorder(consultation_id: str) -> Callable[[Any, Any], None]:
        def record(message: Any, _envelope: Any) -> None:
            if isinstance(message, ChatMessage):
                received[consultation_id].append(message.id)
                if all(received.values()):
                    arrived.set()

        return record

    for patient in queue:
        provider.session(patient.consultation).add_message_handler(recorder(patient.consultation))
    sent = dict(zip((p.consultation for p in queue), await each(queue, Patient.chat), strict=True))
    await asyncio.wait_for(arrived.wait(), 60.0)
    # Routed by the concrete channel: each session got its own patient's message, once.
    assert received == {cid: [message_id] for cid, message_id in sent.items()}

    await each(queue, Patient.leave)
    await hub.wait_for(is_state(S.CANCELLED), count=WAITING, within=60.0)
    for patient in queue:
        assert [str(e.state) for e in hub.items if state_of(patient.consultation, S.CANCELLED)(e)] == [
            "cancelled"
        ]
    assert provider.queue == []
    assert not [e for e in hub.items if isinstance(e, events.ConsultationNotFollowed)]
    assert not [line for line in log_lines.lines if "bus handler failed" in line]


async def test_past_its_bound_a_check_in_is_not_followed_with_a_reason_a_log_line_and_an_event(
    parts: Parts, log_lines: LogLines
) -> None:
    hub = RecordingHub()
    provider = await parts.provider(hub, max_consultations=2)
    first, second, third = await patients(parts, 3)
    await each([first, second], Patient.check_in)
    await hub.wait_for(is_state(S.CHECKED_IN), count=2)

    await third.check_in()
    [event] = await hub.wait_for(lambda e: isinstance(e, events.ConsultationNotFollowed))
    assert event.consultation_id == third.consultation
    assert event.reason == "limit: this endpoint follows at most 2 consultations"
    line = await log_lines.wait_line("consultation not followed", f"consultation={third.consultation}")
    assert "reason=limit: this endpoint follows at most 2 consultations" in line
    assert [w.consultation_id for w in provider.queue] == [first.consultation, second.consultation]

    # A place frees up: the next check-in is followed again.
    await first.leave()
    await hub.wait_for(state_of(first.consultation, S.CANCELLED))
    await third.check_in()
    await hub.wait_for(state_of(third.consultation, S.CHECKED_IN))


async def test_a_restarted_cart_replays_only_the_consultations_still_waiting(
    parts: Parts, log_lines: LogLines
) -> None:
    hub = RecordingHub()
    provider = await parts.provider(hub)
    ended, cancelled, waiting = await patients(parts, 3)
    await each([ended, cancelled, waiting], Patient.check_in)
    await hub.wait_for(is_state(S.CHECKED_IN), count=3)
    await provider.join(ended.consultation)
    await provider.end(ended.consultation, follow_up_required=False)
    await cancelled.leave()
    await hub.wait_for(state_of(cancelled.consultation, S.CANCELLED))
    await hub.wait_for(state_of(ended.consultation, S.COMPLETED))
    await provider.aclose()

    # The cart restarts with no saved consultations (a new cart, a wiped disk): only history.
    restarted_hub = RecordingHub()
    restarted: ProviderEndpoint = await parts.provider(restarted_hub, state_dir=parts.tmp_path / "new-cart")
    assert [w.consultation_id for w in restarted.queue] == [waiting.consultation]
    assert set(restarted.sessions) == {waiting.consultation}
    touched = {
        e.consultation_id
        for e in restarted_hub.items
        if isinstance(e, events.StateChanged | events.SessionClosed | events.StateSaved)
    }
    assert touched == {waiting.consultation}
    await log_lines.wait_line(
        "waiting room replay dropped", f"consultation={ended.consultation}", "reason=ended"
    )
    await log_lines.wait_line(
        "waiting room replay dropped", f"consultation={cancelled.consultation}", "reason=cancelled"
    )


async def test_without_wildcard_subscribe_each_consultation_is_listed_up_to_its_own_bound(
    parts: Parts,
) -> None:
    """A keyset without wildcard subscribe (or one that refuses publishes to the four-segment
    .video channel once it is on): chat and leave still reach the cart, each consultation on its
    own listed channels, and past 24 (PubNub's 100 channels per request) a clear refusal."""
    hub = RecordingHub()
    provider = await parts.provider(hub, wildcard_subscribe=False)
    assert provider.wildcard is None
    queue = await patients(parts, LISTED_CONSULTATIONS_MAX + 1, prefix="listed")
    await each(queue[:-1], Patient.check_in)
    await hub.wait_for(is_state(S.CHECKED_IN), count=LISTED_CONSULTATIONS_MAX, within=60.0)
    await queue[-1].check_in()
    [event] = await hub.wait_for(lambda e: isinstance(e, events.ConsultationNotFollowed))
    assert event.consultation_id == queue[-1].consultation
    assert event.reason == f"limit: this endpoint follows at most {LISTED_CONSULTATIONS_MAX} consultations"

    first = queue[0]
    got: list[str] = []
    provider.session(first.consultation).add_message_handler(
        lambda message, _envelope: got.append(message.id) if isinstance(message, ChatMessage) else None
    )
    message_id = await first.chat()
    await first.leave()
    await hub.wait_for(state_of(first.consultation, S.CANCELLED))
    assert got == [message_id]  # arrived before the leave: one channel, timetoken order
