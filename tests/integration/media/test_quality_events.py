"""Quality measured on a real call: two media children (real aiortc, coturn, a numbered camera
file, ALSA file devices) report their quality level as an event and in ``stats``, with frame rate
and size counted from decoded frames, jitter in ms, and the loss-based ceiling on the real VP8
encoder (the codec's maximum while nothing is lost)."""

from __future__ import annotations

from pathlib import Path

import pytest

from telehealth_client.media.worker import MediaWorker
from telehealth_devstack.turn import TurnServer
from tests.support.media import Events, child_env, turn_config

pytestmark = pytest.mark.integration


async def test_the_media_child_reports_the_calls_quality(turn: TurnServer, tmp_path: Path) -> None:
    patient_events = Events()
    patient_env, patient_devices = child_env(tmp_path, "patient")
    provider_env, provider_devices = child_env(tmp_path, "provider")
    patient = await MediaWorker.spawn(on_event=patient_events, env=patient_env)
    provider = await MediaWorker.spawn(env=provider_env)
    try:
        await patient.start(turn_config(turn, "pat-1"), patient_devices)
        await provider.start(turn_config(turn, "dr-lee"), provider_devices)
        await provider.accept_answer(await patient.answer(await provider.offer()))
        await patient_events.wait(event="first-frame", kind="video")
        # Emitted when the level or the picture size changes: the first sample with the video.
        seen = await patient_events.wait(event="quality", width=640)
        stats = await patient.stats()
    finally:
        await patient.aclose()
        await provider.aclose()
    assert seen["height"] == 480 and 1 <= seen["level"] <= 5
    assert seen["fps"] > 0 and seen["loss_pct"] < 1.0  # frames counted; nothing lost on loopback
    assert seen["jitter_ms"] is not None and seen["jitter_ms"] < 1000.0  # ms, not RTP clock units
    assert seen["inbound_kbps"] > 0 and seen["outbound_kbps"] > 0
    assert seen["video_kbps_ceiling"] == 1500  # VP8's maximum in aiortc: nothing lost, no limit
    quality = stats["quality"]
    assert quality is not None and quality["width"] == 640 and 1 <= quality["level"] <= 5
