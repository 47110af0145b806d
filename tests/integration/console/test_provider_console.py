"""The provider console (the development stack's page on the PubNub JavaScript SDK and the browser's
WebRTC) in headless Chromium with fake devices runs a whole consultation with a real kiosk agent:
the check-in appears in its waiting room, a queue update, join, a call with media both ways, chat
both ways with read receipts, wrap-up and the end with its summary; and, in a second consultation,
a specialist invited and removed, an emergency escalated and resolved. The kiosk's local API status
is read at each step; every wait is for an event or a page condition, never a sleep."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from telehealth_client import events
from telehealth_client.protocol.messages import ConsultationState
from telehealth_devstack.stack import DevStack
from tests.support.api import (
    CONSULTATION,
    MEDIA_WAIT,
    PATIENT,
    PROVIDER,
    SPECIALIST,
    RunningAgent,
    video_flowing,
)
from tests.support.console import (
    by_testid,
    click,
    joined,
    kiosk_consultation,
    sign_in,
    signed_in_with_a_check_in,
)
from tests.support.technician_page import TechnicianPage

pytestmark = pytest.mark.integration


async def test_the_console_runs_a_whole_consultation_with_a_kiosk(
    console_stack: DevStack, kiosk_with_media: RunningAgent, console_page: TechnicianPage
) -> None:
    kiosk, page = kiosk_with_media, console_page
    # The check-in shows up live in the waiting room, first in the queue, with its time.
    row = await signed_in_with_a_check_in(console_stack, kiosk, page)
    await page.wait_for(f"{row} {by_testid('waiting-patient')}", PATIENT)
    await page.wait_for(f"{row} {by_testid('queue-position')}", "#1")
    await page.wait_for(f"{row} {by_testid('checked-in-at')}", "checked in")
    assert (await kiosk_consultation(kiosk))["state"] == "checked-in"

    # A queue update reaches the patient's own notification channel.
    await click(page, "send-queue-updates")
    await kiosk.wait_event(lambda e: isinstance(e, events.QueueUpdated) and e.position == 1)
    seen = await kiosk_consultation(kiosk)
    assert (seen["state"], seen["queuePosition"]) == ("waiting", 1), seen

    # Join: the kiosk is connecting, with the provider on its roster. Before, the console shows the
    # patient present (PubNub presence on the consultation channel).
    await page.do("click", selector=f"{row} {by_testid('open')}")
    await page.wait_for(by_testid("presence"), "present")
    await click(page, "join")
    await kiosk.wait_state(ConsultationState.CONNECTING)
    seen = await kiosk_consultation(kiosk)
    assert seen["state"] == "connecting" and PROVIDER in {m["userId"] for m in seen["roster"]}, seen

    # The call: the browser's fake camera reaches the kiosk, the kiosk's video plays in the page, and
    # the console starts the consultation once media flows.
    await click(page, "call-start")
    await kiosk.wait_event(video_flowing, within=MEDIA_WAIT)
    await kiosk.wait_state(ConsultationState.IN_PROGRESS)
    await page.wait_for(by_testid("call-phase"), "connected")
    await page.wait_for(
        '#remote[data-frames]:not([data-frames="1"]):not([data-frames="2"])', within=MEDIA_WAIT
    )
    await page.wait_for(by_testid("consultation-state"), "in-progress")
    seen = await kiosk_consultation(kiosk)
    assert seen["state"] == "in-progress", seen
    assert seen["call"]["status"] == "live" and "video" in seen["call"]["media"], seen

    # Chat both ways: the patient's message shows and the console reads it; the console's shows on
    # the kiosk, whose receipt the console shows.
    status, sent = await kiosk.api.post("/v1/chat", {"text": "my knee hurts"})
    assert status == 201, sent
    patient_message = sent["message"]["id"]
    await page.wait_for(f'{by_testid("chat")} li[data-chat-id="{patient_message}"]', "my knee hurts")
    await kiosk.wait_event(lambda e: isinstance(e, events.ChatReadUpdated) and e.up_to_id == patient_message)
    await page.do("fill", selector=by_testid("chat-text"), value="since when?")
    await click(page, "chat-send")
    added = await kiosk.wait_event(
        lambda e: isinstance(e, events.ChatMessageAdded) and e.sender_id == PROVIDER
    )
    status, chat = await kiosk.api.get("/v1/chat")
    assert status == 200
    assert [(m["text"], m["senderId"]) for m in chat["messages"]] == [
        ("my knee hurts", PATIENT),
        ("since when?", PROVIDER),
    ]
    assert chat["messages"][0]["readBy"] == [PROVIDER]
    assert (await kiosk.api.post("/v1/chat/read", {}))[0] == 200
    await page.wait_for(f'{by_testid("chat")} li[data-chat-id="{added.message_id}"][data-read="yes"]')

    # Wrap up, then end with the summary: the call hangs up and the kiosk completes and goes idle.
    await click(page, "wrap-up")
    await kiosk.wait_state(ConsultationState.WRAPPING_UP)
    assert (await kiosk_consultation(kiosk))["state"] == "wrapping-up"
    await click(page, "follow-up")
    await click(page, "end")
    ended = await kiosk.wait_state(ConsultationState.COMPLETED)
    assert ended.summary is not None and ended.summary.follow_up_required is True
    assert ended.summary.duration >= 1
    await page.wait_for(by_testid("summary"), "follow-up required: yes")
    await kiosk.seen.until(lambda: kiosk.agent.idle)
    status, answer = await kiosk.api.get("/v1/status")
    assert (status, answer["consultations"]) == (200, []), answer
    assert page.page_errors() == [] and page.console_errors() == []


def roster_change(kind: str, user_id: str) -> Callable[[object], bool]:
    return lambda e: (
        isinstance(e, events.RosterChanged)
        and any(c.kind == kind and c.user_id == user_id for c in e.changes)
    )


async def test_the_console_invites_and_removes_a_specialist_and_escalates_and_resolves(
    console_stack: DevStack, kiosk_with_media: RunningAgent, console_page: TechnicianPage
) -> None:
    kiosk, page = kiosk_with_media, console_page
    await joined(console_stack, kiosk, page)

    # Invited through the clinic, then announced: the kiosk's roster has the specialist.
    await page.do("select", selector=by_testid("invitee"), value=SPECIALIST)
    await page.do("select", selector=by_testid("invite-role"), value="second-opinion")
    await click(page, "invite")
    await kiosk.wait_event(roster_change("invited", SPECIALIST))
    members = {m["userId"]: m for m in (await kiosk_consultation(kiosk))["roster"]}
    assert (members[SPECIALIST]["role"], members[SPECIALIST]["status"]) == ("second-opinion", "invited")
    invited = f'{by_testid("invited")} li[data-user-id="{SPECIALIST}"]'
    await page.wait_for(invited, "second-opinion")

    # Removed: announced first, then its access revoked (the clinic's refusal would show).
    await page.do("click", selector=f"{invited} {by_testid('remove')}")
    await kiosk.wait_event(roster_change("removed", SPECIALIST))
    members = {m["userId"]: m for m in (await kiosk_consultation(kiosk))["roster"]}
    assert members[SPECIALIST]["status"] == "removed"
    await page.wait_for(invited, state="detached")
    await page.wait_for(by_testid("error"), state="hidden")

    # An emergency on the department's channel, read back live, then resolved.
    await page.do("select", selector=by_testid("severity"), value="critical")
    await page.do("fill", selector=by_testid("reason"), value="patient fainted")
    await click(page, "escalate")
    escalation = f'{by_testid("escalations")} li[data-status="active"]'
    await page.wait_for(escalation, f"critical · {CONSULTATION} · by {PROVIDER}")
    await page.do("fill", selector=by_testid("resolution"), value="responded on site")
    await page.do("click", selector=f"{escalation} {by_testid('resolve')}")
    await page.wait_for(f'{by_testid("escalations")} li[data-status="resolved"]', "resolved")
    await page.wait_for(by_testid("error"), state="hidden")

    # Ended without a call: the summary says no follow-up.
    await click(page, "end")
    ended = await kiosk.wait_state(ConsultationState.COMPLETED)
    assert ended.summary is not None and ended.summary.follow_up_required is False
    await page.wait_for(by_testid("summary"), "follow-up required: no")
    assert page.page_errors() == [] and page.console_errors() == []


async def test_after_a_reload_the_console_calls_again_and_shows_call_refusals(
    console_stack: DevStack, kiosk_with_media: RunningAgent, console_page: TechnicianPage
) -> None:
    kiosk, page = kiosk_with_media, console_page
    row = await joined(console_stack, kiosk, page)
    # A refusal of the call module shows its own reason, not a generic failure.
    await click(page, "call-end")
    await page.wait_for(by_testid("error"), "call: no call is under way")

    # A browser refresh mid-consultation: signed in again, the consultation is read back as joined
    # (its history) and its calls are followed again, so the call starts.
    await page.do("reload")
    await sign_in(page, PROVIDER)
    await page.do("click", selector=f"{row} {by_testid('open')}")
    await page.wait_for(by_testid("consultation-state"), "connecting")
    await click(page, "call-start")
    await kiosk.wait_event(video_flowing, within=MEDIA_WAIT)
    await page.wait_for(by_testid("call-phase"), "connected")
    await kiosk.wait_state(ConsultationState.IN_PROGRESS)
    await page.wait_for(by_testid("error"), state="hidden")
    assert (await kiosk_consultation(kiosk))["call"]["status"] == "live"

    # A refresh during the call: the page is followed again as soon as it is signed in, so the
    # kiosk's rebuild (its inbound media stopped) is answered and the picture comes back unasked.
    await page.do("reload")
    await sign_in(page, PROVIDER)
    await page.do("click", selector=f"{row} {by_testid('open')}")
    await page.wait_for(by_testid("consultation-state"), "in-progress")
    await page.wait_for(by_testid("call-phase"), "connected", within=MEDIA_WAIT)
    await page.wait_for(
        '#remote[data-frames]:not([data-frames="1"]):not([data-frames="2"])', within=MEDIA_WAIT
    )
    assert (await kiosk_consultation(kiosk))["call"]["status"] == "live"
    assert page.page_errors() == [] and page.console_errors() == []
