"""A whole consultation driven only through the two agents' local APIs: the kiosk checks the patient
in, the provider's cart sees it in its waiting room, sends queue updates, joins, chats both ways
with read receipts, invites and removes a specialist, wraps up and ends with the summary; each
refusal on the way is a 409 with the state, and changes nothing. (Without media: the call through
the API is the next step of issue 23.)"""

from __future__ import annotations

import pytest

from telehealth_client import events
from telehealth_client.protocol.messages import ConsultationState
from telehealth_devstack.stack import DevStack
from tests.support.api import (
    CHECK_IN,
    CONSULTATION,
    PATIENT,
    PROVIDER,
    SPECIALIST,
    RunningAgent,
    record_consent,
)

pytestmark = pytest.mark.integration

ONE = f"/v1/consultations/{CONSULTATION}"


async def checked_in(kiosk: RunningAgent, provider: RunningAgent) -> None:
    status, answer = await kiosk.api.post("/v1/check-in", CHECK_IN)
    assert status == 201, answer
    assert answer["consultation"]["consultationId"] == CONSULTATION
    assert answer["consultation"]["patientId"] == PATIENT
    await provider.seen.until(
        lambda: any(p.consultation_id == CONSULTATION for p in provider.agent.provider.queue)
    )  # type: ignore[union-attr]


async def test_a_whole_consultation_through_the_two_apis(
    kiosk: RunningAgent, provider: RunningAgent, stack: DevStack
) -> None:
    await record_consent(stack)
    await checked_in(kiosk, provider)

    # Checking in again while it runs: 409 with the state, nothing changed.
    status, answer = await kiosk.api.post("/v1/check-in", CHECK_IN)
    assert (status, answer["error"]) == (409, "busy")
    assert answer["state"] in ("checked-in", "waiting")

    status, room = await provider.api.get("/v1/waiting-room")
    assert status == 200
    assert [(p["consultationId"], p["patientId"]) for p in room["waiting"]] == [(CONSULTATION, PATIENT)]

    # Wrapping up before joining: refused by the lifecycle, with the state.
    status, answer = await provider.api.post(f"{ONE}/wrap-up")
    assert status == 409 and answer["state"] in ("checked-in", "waiting"), answer

    assert (await provider.api.post("/v1/waiting-room/queue-updates", {"minutesPerPatient": 5})) == (
        200,
        {"sent": 1},
    )
    await kiosk.wait_event(lambda e: isinstance(e, events.QueueUpdated) and e.position == 1)
    status, state = await kiosk.api.get("/v1/status")
    assert state["consultations"][0]["queuePosition"] == 1
    assert state["consultations"][0]["estimatedWaitMinutes"] == 0

    status, answer = await provider.api.post(f"{ONE}/join")
    assert (status, answer["consultation"]["state"]) == (200, "connecting"), answer
    await kiosk.wait_state(ConsultationState.CONNECTING)

    # This cart has no media: the call is refused, saying so.
    status, answer = await provider.api.post(f"{ONE}/call")
    assert (status, answer["error"], answer["state"]) == (409, "no-media", "connecting")

    # Chat both ways, each reading the other's message.
    status, sent = await kiosk.api.post("/v1/chat", {"text": "my knee hurts"})
    assert status == 201 and sent["message"]["own"] is True
    patient_message = sent["message"]["id"]
    await provider.wait_event(
        lambda e: isinstance(e, events.ChatMessageAdded) and e.message_id == patient_message
    )
    status, chat = await provider.api.get(f"{ONE}/chat")
    assert status == 200
    assert [(m["id"], m["text"], m["senderId"]) for m in chat["messages"]] == [
        (patient_message, "my knee hurts", PATIENT)
    ]
    status, read = await provider.api.post(f"{ONE}/chat/read", {})
    assert status == 200 and read["receiptId"]
    await kiosk.wait_event(lambda e: isinstance(e, events.ChatReadUpdated) and e.up_to_id == patient_message)
    status, sent = await provider.api.post(f"{ONE}/chat", {"text": "since when?"})
    assert status == 201
    await kiosk.wait_event(
        lambda e: isinstance(e, events.ChatMessageAdded) and e.message_id == sent["message"]["id"]
    )
    status, chat = await kiosk.api.get("/v1/chat")
    assert [m["text"] for m in chat["messages"]] == ["my knee hurts", "since when?"]
    assert chat["messages"][0]["readBy"] == [PROVIDER]
    # A receipt for a message the chat does not hold: 422 naming the field.
    status, answer = await kiosk.api.post("/v1/chat/read", {"upToId": "not-a-message"})
    assert (status, answer["fields"][0]["field"]) == (422, "upToId")
    status, answer = await kiosk.api.post("/v1/chat", {"text": "   "})
    assert (status, answer["fields"][0]["field"]) == (422, "text")

    # A specialist invited, then removed.
    status, answer = await provider.api.post(
        f"{ONE}/invite", {"providerId": SPECIALIST, "role": "specialist"}
    )
    assert status == 200, answer
    assert SPECIALIST in {m["userId"] for m in answer["consultation"]["roster"]}
    status, answer = await provider.api.post(f"{ONE}/invite", {"providerId": SPECIALIST, "role": "surgeon"})
    assert (status, [f["field"] for f in answer["fields"]]) == (422, ["role"])
    status, answer = await provider.api.post(f"{ONE}/remove", {"providerId": SPECIALIST})
    assert status == 200 and answer["revoked"] >= 0, answer

    # Ending as the patient: refused, naming the role; the kiosk's state is unchanged.
    status, answer = await kiosk.api.post(f"{ONE}/end", {"followUpRequired": True})
    assert (status, answer["role"], answer["state"]) == (409, "patient", "connecting")

    status, answer = await provider.api.post(f"{ONE}/wrap-up")
    assert (status, answer["consultation"]["state"]) == (200, "wrapping-up")
    status, answer = await provider.api.post(f"{ONE}/end", {"followUpRequired": True})
    assert status == 200, answer
    assert answer["consultation"]["state"] == "completed"
    assert answer["summary"]["followUpRequired"] is True and answer["summary"]["duration"] >= 1
    ended = await kiosk.wait_state(ConsultationState.COMPLETED)
    assert ended.summary is not None and ended.summary.follow_up_required is True

    # Over: the kiosk is idle again and its chat closed.
    await kiosk.seen.until(lambda: kiosk.agent.idle)
    status, answer = await kiosk.api.get("/v1/chat")
    assert (status, answer["state"]) == (409, "idle")
    assert (await provider.api.post(f"{ONE}/end", {"followUpRequired": False}))[0] == 404


async def test_the_patient_leaves_through_the_api(
    kiosk: RunningAgent, provider: RunningAgent, stack: DevStack
) -> None:
    await record_consent(stack)
    await checked_in(kiosk, provider)
    status, answer = await kiosk.api.post("/v1/leave")
    assert (status, answer["consultation"]["state"]) == (200, "cancelled"), answer
    cancelled = await provider.wait_state(ConsultationState.CANCELLED)
    assert cancelled.cancel_reason == "patient-left"
    await kiosk.seen.until(lambda: kiosk.agent.idle)
    assert (await kiosk.api.post("/v1/leave"))[1]["state"] == "idle"


async def test_check_in_without_consent_is_refused_and_the_kiosk_stays_idle(kiosk: RunningAgent) -> None:
    status, answer = await kiosk.api.post("/v1/check-in", CHECK_IN)
    assert (status, answer["error"]) == (409, "check-in-refused"), answer
    assert answer["fields"][0]["field"] == "consent"
    assert answer["state"] == "idle"
    assert (await kiosk.api.get("/v1/status"))[1]["status"] == "idle"
