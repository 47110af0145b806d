"""The call's video previews through the API, on real agents with their media children: MJPEG
streams of decodable JPEGs during a call (the kiosk's remote video, the cart's own camera), each
watch told on the hub (``PreviewWatched``) and recorded in the audit trail as PHI access, the
stream ending with the call; 409 without a call; the token required."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import cv2
import numpy as np
import pytest

from telehealth_client import events
from telehealth_devstack.stack import DevStack
from tests.support.api import (
    CHECK_IN,
    CONSULTATION,
    KIOSK,
    MEDIA_WAIT,
    WAIT,
    Agents,
    RunningAgent,
    call_under_way,
    mjpeg_parts,
    record_consent,
)
from tests.support.audit import sink_events
from tests.support.media import devices_environment

pytestmark = pytest.mark.integration

STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=WAIT, sock_read=WAIT)


def decoded(jpeg: bytes) -> np.ndarray[Any, Any]:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable JPEG"
    return image


def watched(side: str, watching: bool) -> Any:
    return lambda e: isinstance(e, events.PreviewWatched) and e.preview == side and e.watching is watching


async def test_no_preview_without_a_call_and_none_without_the_token(
    kiosk: RunningAgent, provider: RunningAgent, stack: DevStack
) -> None:
    for running in (kiosk, provider):
        for side in ("local", "remote"):
            status, answer = await running.api.get(f"/v1/previews/{side}")
            assert (status, answer["error"]) == (409, "no-call"), answer
            assert (await running.api.get(f"/v1/previews/{side}", token=None))[0] == 401
            assert (await running.api.get(f"/v1/previews/{side}", token="wrong"))[0] == 401
        assert await running.api.get("/v1/previews") == (200, {"available": [], "watched": []})
    status, answer = await kiosk.api.get("/v1/previews/remote")
    assert answer["state"] == "idle"
    # A consultation without a call (this kiosk has no media) has nothing to show either.
    await record_consent(stack)
    assert (await kiosk.api.post("/v1/check-in", CHECK_IN))[0] == 201
    status, answer = await kiosk.api.get("/v1/previews/remote")
    assert (status, answer["error"]) == (409, "no-call")
    assert answer["state"] not in ("idle", "none")
    assert not any(isinstance(e, events.PreviewWatched) for e in kiosk.seen.items)


async def test_the_previews_stream_decodable_jpegs_during_a_call(
    agents: Agents, stack: DevStack, tmp_path: Path
) -> None:
    kiosk, provider = await call_under_way(agents, lambda name: devices_environment(tmp_path, name))
    assert (await kiosk.api.get("/v1/previews")) == (200, {"available": [CONSULTATION], "watched": []})

    async with kiosk.api.session.get(
        kiosk.api.base + "/v1/previews/remote", headers=kiosk.api.headers(), timeout=STREAM_TIMEOUT
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=preview"
        images = []
        async for jpeg in mjpeg_parts(response):
            images.append(decoded(jpeg))
            if len(images) == 3:
                break
        assert all(image.shape[1] <= 320 for image in images)  # small: a preview, not the call
        assert not np.array_equal(images[0], images[-1])  # live: the far end's video moves
        assert await kiosk.wait_event(watched("remote", True)) == events.PreviewWatched(
            CONSULTATION, "remote", True, 1
        )
        status, listing = await kiosk.api.get("/v1/previews")
        assert listing["watched"] == [{"consultationId": CONSULTATION, "preview": "remote", "watchers": 1}]
    # The client went away: the watch ends, and the child is told to stop encoding.
    assert await kiosk.wait_event(watched("remote", False)) == events.PreviewWatched(
        CONSULTATION, "remote", False, 0
    )
    assert (await kiosk.api.get("/v1/previews"))[1]["watched"] == []
    kiosk_call = kiosk.agent.patient.call  # type: ignore[union-attr]
    assert kiosk_call is not None and kiosk_call.worker is not None
    assert kiosk_call.worker.previews.watched == ()

    # Watching was recorded as access to the consultation's pictures, the kiosk as the actor.
    assert kiosk.agent.durable is not None
    assert await kiosk.agent.durable.trail.wait_delivered(WAIT)
    accesses = [e for e in await sink_events(stack) if e["eventType"] == "PHI_FILE_ACCESSED"]
    assert len(accesses) == 1, accesses
    (access,) = accesses
    assert access["actor"]["userId"] == KIOSK
    assert access["resource"] == {
        "type": "video-preview",
        "id": f"{CONSULTATION}.remote",
        "channel": f"{CONSULTATION}.video",
    }
    assert access["metadata"] == {"sessionId": CONSULTATION, "preview": "remote"}

    # The cart's own camera, until the call ends: then the stream ends by itself.
    async with provider.api.session.get(
        provider.api.base + "/v1/previews/local", headers=provider.api.headers(), timeout=STREAM_TIMEOUT
    ) as response:
        assert response.status == 200
        parts = mjpeg_parts(response)
        decoded(await anext(parts))
        status, answer = await provider.api.post(f"/v1/consultations/{CONSULTATION}/end-call")
        assert status == 200, answer

        async def drain() -> int:
            return len([jpeg async for jpeg in parts])

        await asyncio.wait_for(drain(), MEDIA_WAIT)
    await provider.wait_event(watched("local", False))
    status, answer = await provider.api.get("/v1/previews/local")
    assert (status, answer["error"]) == (409, "no-call")
