"""A call whose path cannot carry video goes on with audio alone, and gets its video back
(issue 21, item 2). Real loss: iptables drops a fifth of the datagrams coturn relays between the two
peers' allocations (this test's coturn only). The kiosk's media child measures it, lowers its video
bitrate to the floor, then stops sending video and tells the provider (DEVICE_STATUS network
``audio-only``), which stops its own; audio goes on and the call is never failed or ended. With the
loss gone, video comes back both ways. The sample counts are shortened for the test (FAST); the
loss and everything measured are real."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from telehealth_client import events
from telehealth_client.media.fallback import FallbackSettings
from telehealth_client.media.worker import MediaWorker
from tests.support.consultation import CONSULTATION, Parts, RecordingHub
from tests.support.media import connecting, flowing, media_options
from tests.support.preflight import packet_loss

pytestmark = pytest.mark.integration

WAIT = 30.0
FALLBACK_WAIT = 90.0  # the bitrate floor first (about 10 s of loss), then the poor samples
FAST = FallbackSettings(poor_samples=3, good_samples=3)


def video_mode(mode: str, source: str) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, events.CallVideoModeChanged) and (e.mode, e.source) == (mode, source)


def device_network(network: str) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, events.DeviceStatusReported) and e.network == network


async def until_stats(worker: MediaWorker, wanted: Callable[[dict[str, Any]], bool], what: str) -> None:
    """Until the child's stats (its last one-second quality sample) show ``wanted``."""
    deadline = asyncio.get_running_loop().time() + WAIT
    while not wanted(await worker.stats()):
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.25)  # the child's sample, read again (nothing to wait on)


def fps(stats: dict[str, Any]) -> float:
    quality = stats.get("quality")
    return -1.0 if quality is None else float(quality["fps"])


def ended_or_failed(hub: RecordingHub) -> list[events.Event]:
    return [e for e in hub.items if isinstance(e, events.CallStateChanged) and e.phase in ("ended", "failed")]


async def test_a_call_that_cannot_carry_video_goes_on_with_audio_and_gets_video_back(
    parts: Parts, tmp_path: Path
) -> None:
    patient_media = dataclasses.replace(media_options(tmp_path, "patient"), fallback=FAST)
    patient, provider, patient_hub, provider_hub = await connecting(parts, tmp_path, patient_media)
    provider_call = await provider.call(CONSULTATION)
    for hub in (patient_hub, provider_hub):
        await hub.wait_for(flowing("video"), within=WAIT)
    patient_call = patient.call
    assert patient_call is not None
    turn = parts.stack.turn
    assert turn is not None

    with packet_loss(turn, 0.2):
        await patient_hub.wait_for(video_mode("audio-only", "network"), within=FALLBACK_WAIT)
        await provider_hub.wait_for(device_network("audio-only"), within=WAIT)
        await provider_hub.wait_for(video_mode("audio-only", "far-end"), within=WAIT)
        assert patient_call.video_mode == provider_call.video_mode == "audio-only"
        # No video either way now; audio goes on (the stall watch would rebuild a silent call).
        for call in (patient_call, provider_call):
            worker = call.worker
            assert worker is not None
            await until_stats(worker, lambda s: fps(s) == 0.0, "video still arrives in an audio-only call")
            before = (await worker.stats())["received"]["audio"]
            await until_stats(worker, lambda s, n=before: s["received"]["audio"] > n + 50, "no audio")
        assert ended_or_failed(patient_hub) == [] and ended_or_failed(provider_hub) == []

    await patient_hub.wait_for(video_mode("video", "network"), within=FALLBACK_WAIT)
    await provider_hub.wait_for(device_network("video"), within=WAIT)
    await provider_hub.wait_for(video_mode("video", "far-end"), within=WAIT)
    for call in (patient_call, provider_call):
        worker = call.worker
        assert worker is not None
        await until_stats(worker, lambda s: fps(s) > 5.0, "video did not come back")
    assert ended_or_failed(patient_hub) == [] and ended_or_failed(provider_hub) == []
    # The device verdicts the provider sees are the kiosk's own throughout; only the network moved.
    reported = [e for e in provider_hub.items if isinstance(e, events.DeviceStatusReported)]
    assert [e.network for e in reported][-2:] == ["audio-only", "video"]
    # Each side's one call status went audio-only and back to live (a stall on the lossy path may
    # come between), never ended.
    for hub in (patient_hub, provider_hub):
        statuses = hub.call_statuses()
        assert statuses[:2] == ["connecting", "live"] and statuses[-1] == "live"
        assert "audio-only" in statuses and not {"ended", "failed"} & set(statuses)
