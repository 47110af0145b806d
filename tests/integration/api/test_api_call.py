"""A call driven through the two agents' APIs: media on both (generated camera and microphone, ALSA
file devices), the provider calls through its API, the kiosk answers by itself, media flows both
ways relay-only, the consultation moves to in-progress, both statuses show the live call, and the
provider ends the call and then the consultation through its API."""

from __future__ import annotations

from pathlib import Path

import pytest

from telehealth_client import events
from telehealth_client.protocol.messages import ConsultationState
from telehealth_devstack.stack import DevStack
from tests.support.api import CHECK_IN, CONSULTATION, KIOSK, PROVIDER, Agents, RunningAgent, record_consent
from tests.support.media import devices_environment

pytestmark = pytest.mark.integration

ONE = f"/v1/consultations/{CONSULTATION}"
MEDIA_WAIT = 45.0  # the media children start (aiortc's import) on a shared 2-core machine


def video_flowing(event: object) -> bool:
    return (
        isinstance(event, events.MediaFlowing)
        and event.consultation_id == CONSULTATION
        and event.media == "video"
    )


async def with_media(agents: Agents, user_id: str, name: str, tmp_path: Path) -> RunningAgent:
    return await agents.start(user_id, TELEHEALTH_MEDIA="true", **devices_environment(tmp_path, name))


async def test_a_call_through_the_apis(agents: Agents, stack: DevStack, tmp_path: Path) -> None:
    provider = await with_media(agents, PROVIDER, "provider", tmp_path)
    kiosk = await with_media(agents, KIOSK, "patient", tmp_path)
    await record_consent(stack)
    assert (await kiosk.api.post("/v1/check-in", CHECK_IN))[0] == 201
    await provider.seen.until(
        lambda: any(p.consultation_id == CONSULTATION for p in provider.agent.provider.queue)
    )  # type: ignore[union-attr]
    assert (await provider.api.post(f"{ONE}/join"))[0] == 200
    await kiosk.wait_state(ConsultationState.CONNECTING)

    # Ending a call before one was started through the API: 409.
    status, answer = await provider.api.post(f"{ONE}/end-call")
    assert (status, answer["error"]) == (409, "no-call")

    status, answer = await provider.api.post(f"{ONE}/call")
    assert status == 200, answer
    await provider.wait_event(video_flowing, within=MEDIA_WAIT)
    await kiosk.wait_event(video_flowing, within=MEDIA_WAIT)
    await provider.wait_state(ConsultationState.IN_PROGRESS)
    await kiosk.wait_state(ConsultationState.IN_PROGRESS)

    for running in (kiosk, provider):
        status, state = await running.api.get("/v1/status")
        (consultation,) = state["consultations"]
        assert consultation["state"] == "in-progress"
        assert consultation["call"]["status"] in ("live", "audio-only"), consultation

    status, answer = await provider.api.post(f"{ONE}/end-call")
    assert status == 200, answer
    for running in (provider, kiosk):
        await running.wait_event(
            lambda e: (
                isinstance(e, events.CallStateChanged)
                and e.consultation_id == CONSULTATION
                and e.phase == "ended"
            ),
            within=MEDIA_WAIT,
        )
    assert (await provider.api.post(f"{ONE}/wrap-up"))[0] == 200
    status, answer = await provider.api.post(f"{ONE}/end", {"followUpRequired": False})
    assert (status, answer["consultation"]["state"]) == (200, "completed")
    await kiosk.wait_state(ConsultationState.COMPLETED)
