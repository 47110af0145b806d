"""Run a full device check while a task ticks every 10 ms; print the check's duration and the
longest gap between ticks as JSON. Run in a fresh process with ALSA_CONFIG_PATH set."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time

from devices import DeviceThresholds, run_device_check
from devices.thresholds import CameraThresholds


async def main(camera: str, microphone: str, speaker: str, monitor: str, frames: int) -> None:
    ticks: list[float] = []

    async def tick() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)  # let the ticker settle before the check starts
    started = time.perf_counter()
    report = await run_device_check(
        camera,
        microphone,
        speaker,
        DeviceThresholds(camera=CameraThresholds(frames=frames, deadline_s=30)),
        speaker_monitor=monitor,
    )
    ended = time.perf_counter()
    ticker.cancel()
    during = [t for t in ticks if started <= t <= ended]
    edges = [started, *during, ended]
    gaps = [b - a for a, b in itertools.pairwise(edges)]
    print(
        json.dumps(
            {
                "status": report.status,
                "check_s": ended - started,
                "max_gap_s": max(gaps),
                "ticks": len(during),
                "camera_frames": report.camera.frames_read if report.camera else 0,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
