"""Muting the call through the API (``POST /v1/call/mute`` on the kiosk, ``.../{id}/mute`` on a
cart): on a real call between two agents the far end's speaker plays silence while the kiosk's
microphone is muted and the tone again once unmuted, the call going on; the state is in the answer,
the status and the event stream; it holds across a media child replaced after a crash; bad bodies
are 422 naming the field, and without a call 409 naming the state."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from telehealth_client import events
from tests.support import api as api_support
from tests.support.api import CONSULTATION, MEDIA_WAIT, WAIT, Agents, RunningAgent
from tests.support.media import PlayedAudio, SharedAlsa, shared_alsa

pytestmark = pytest.mark.integration

MUTE = "/v1/call/mute"
# The kiosk's microphone is a -20 dBFS tone (RMS ~3300); decoded silence is a few units at most.
TONE = 1000.0
SILENCE = 50.0
BLACK = 20.0  # mean grey level of a black frame's JPEG; the numbered video's is ~120


def muted_to(audio: bool, video: bool) -> object:
    return lambda e: (
        isinstance(e, events.CallMuteChanged)
        and e.consultation_id == CONSULTATION
        and (e.audio, e.video) == (audio, video)
    )


async def call_status(agent: RunningAgent) -> dict[str, object]:
    status, state = await agent.api.get("/v1/status")
    assert status == 200, state
    (consultation,) = state["consultations"]
    call: dict[str, object] = consultation["call"]
    return call


@pytest.fixture
async def speaker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[SharedAlsa, PlayedAudio]]:
    """The devices of a kiosk and a provider in this process (their media children share one ALSA
    configuration), and the provider's speaker heard: its file a FIFO, read before its media child
    opens it and closed after the agents (asked for before ``agents``, it is torn down after)."""
    alsa = await asyncio.to_thread(shared_alsa, tmp_path, ("provider", "patient"), ("provider",))
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(alsa.config))
    heard = await PlayedAudio.open(alsa.played["provider"])
    yield alsa, heard
    heard.close()


async def test_muting_the_kiosk_silences_it_at_the_far_end_until_unmuted(
    speaker: tuple[SharedAlsa, PlayedAudio], agents: Agents
) -> None:
    alsa, heard = speaker
    kiosk, provider = await api_support.call_under_way(agents, alsa.settings.__getitem__)
    await mute_and_unmute(kiosk, provider, heard)


async def mute_and_unmute(kiosk: RunningAgent, provider: RunningAgent, heard: PlayedAudio) -> None:
    await heard.heard(lambda level: level > TONE, within=MEDIA_WAIT)

    status, answer = await kiosk.api.post(MUTE, {"audio": True})
    assert (status, answer) == (
        200,
        {"consultationId": CONSULTATION, "muted": {"audio": True, "video": False}},
    )
    await kiosk.wait_event(muted_to(True, False))
    assert (await call_status(kiosk))["muted"] == {"audio": True, "video": False}
    await heard.heard(lambda level: level < SILENCE)
    # Silence is still a stream: the call goes on, nothing stalled.
    assert (await call_status(provider))["status"] in ("live", "audio-only")

    # The camera too: the far end shows black frames; the microphone stays as it was.
    status, answer = await kiosk.api.post(MUTE, {"video": True})
    assert (status, answer["muted"]) == (200, {"audio": True, "video": True})
    await kiosk.wait_event(muted_to(True, True))
    await remote_picture(provider, black=True)

    # A cart mutes the call it started on that consultation; the kiosk's mute is its own.
    status, answer = await provider.api.post(f"/v1/consultations/{CONSULTATION}/mute", {"video": True})
    assert (status, answer) == (
        200,
        {"consultationId": CONSULTATION, "muted": {"audio": False, "video": True}},
    )
    await provider.wait_event(muted_to(False, True))
    assert (await call_status(provider))["muted"] == {"audio": False, "video": True}

    status, answer = await kiosk.api.post(MUTE, {"audio": False, "video": False})
    assert (status, answer["muted"]) == (200, {"audio": False, "video": False})
    await heard.heard(lambda level: level > TONE)
    await remote_picture(provider, black=False)
    assert (await call_status(kiosk))["muted"] == {"audio": False, "video": False}


async def remote_picture(agent: RunningAgent, *, black: bool) -> None:
    """Until the far end's picture, in ``agent``'s remote preview, is black (or is not)."""

    async def seen() -> None:
        api = agent.api
        async with api.session.get(f"{api.base}/v1/previews/remote", headers=api.headers()) as response:
            assert response.status == 200
            async for jpeg in api_support.mjpeg_parts(response):
                image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
                if (float(image.mean()) < BLACK) == black:
                    return

    await asyncio.wait_for(seen(), WAIT)


async def test_the_mute_holds_when_the_media_child_is_replaced(
    speaker: tuple[SharedAlsa, PlayedAudio], agents: Agents
) -> None:
    alsa, heard = speaker
    kiosk, _provider = await api_support.call_under_way(agents, alsa.settings.__getitem__)
    await crash_while_muted(kiosk, heard)


async def crash_while_muted(kiosk: RunningAgent, heard: PlayedAudio) -> None:
    assert (await kiosk.api.post(MUTE, {"audio": True}))[0] == 200
    await heard.heard(lambda level: level < SILENCE, within=MEDIA_WAIT)
    media = kiosk.agent.patient.call if kiosk.agent.patient is not None else None
    assert media is not None and media.worker is not None
    crashed = media.worker.pid
    flowed = len(kiosk.seen.items)
    os.kill(crashed, signal.SIGKILL)
    # A new child carries the call again (recovery), and it was started muted.
    await kiosk.seen.until(
        lambda: (
            media.worker is not None
            and media.worker.pid != crashed
            and any(
                isinstance(e, events.MediaFlowing) and e.media == "audio" for e in kiosk.seen.items[flowed:]
            )
        ),
        within=MEDIA_WAIT,
    )
    assert media.worker.mute.audio is True
    # A second of the new child's audio, every tenth of it silent: it was muted from its start.
    assert max(await heard.next_levels(10)) < SILENCE
    assert (await kiosk.api.post(MUTE, {"audio": False}))[0] == 200
    await heard.heard(lambda level: level > TONE)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body"),
        ({"audio": "yes"}, "audio"),
        ({"video": 1}, "video"),
        ({"audio": True, "mic": True}, "mic"),
    ],
    ids=["empty", "audio-not-bool", "video-not-bool", "unknown-field"],
)
async def test_a_bad_mute_body_is_422_naming_the_field(
    kiosk: RunningAgent, body: dict[str, object], field: str
) -> None:
    status, answer = await kiosk.api.post(MUTE, body)
    assert (status, [f["field"] for f in answer["fields"]]) == (422, [field]), answer


async def test_muting_without_a_call_is_409_naming_the_state(
    kiosk: RunningAgent, provider: RunningAgent
) -> None:
    status, answer = await kiosk.api.post(MUTE, {"audio": True})
    assert (status, answer["error"], answer["state"]) == (409, "no-call", "idle")
    status, answer = await provider.api.post(f"/v1/consultations/{CONSULTATION}/mute", {"audio": True})
    assert status == 404, answer
    # A cart has no kiosk call to mute; a kiosk no consultation route.
    status, answer = await provider.api.post(MUTE, {"audio": True})
    assert (status, answer["error"]) == (409, "wrong-role")
