#!/usr/bin/env python3
"""Benchmark the device checks; prints one JSON object.

- full_check: run_device_check (camera + microphone + speaker heard through a
  loopback) on synthetic devices: a lossless 640x480 video through OpenCV and
  ALSA file devices through PortAudio, in a child process with its own
  ALSA_CONFIG_PATH. The first run of a process is reported apart: it imports
  OpenCV and loads PortAudio.
- The synthetic devices deliver as fast as they are read, so the report also
  estimates the time on real hardware at 30 fps and 48 kHz: each branch's
  measured time, less the time spent decoding the FFV1 file (a camera
  delivers decoded frames), plus the media time at the hardware rate. The
  camera branch runs alongside the microphone-then-speaker branch.
- frame_metrics: cost of the per-frame measurements at 640x480 and 1280x720.

Usage: .venv/bin/python scripts/bench_devices.py [--runs N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET_S = 2.0
CAMERA_FPS = 30.0


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def frame_metric_cost(width: int, height: int, frames: int = 200) -> dict[str, Any]:
    from devices import frame_metrics
    from devices.synthetic import video_frames

    sample = video_frames("normal", 20, width, height)
    costs: list[float] = []
    previous = frame_metrics.measure(sample[0]).thumbnail
    for index in range(frames):
        frame = sample[index % len(sample)]
        started = time.perf_counter()
        metrics = frame_metrics.measure(frame)
        frame_metrics.difference(previous, metrics.thumbnail)
        costs.append((time.perf_counter() - started) * 1000)
        previous = metrics.thumbnail
    return {
        "size": f"{width}x{height}",
        "frames": frames,
        "p50_ms": round(statistics.median(costs), 3),
        "p95_ms": round(_percentile(costs, 0.95), 3),
    }


def child(video: str, runs: int) -> dict[str, Any]:
    """Runs in the process that has the synthetic ALSA configuration."""
    from devices import DeviceThresholds, run_device_check
    from devices.synthetic import MICROPHONE, MONITOR, SPEAKER

    limits = DeviceThresholds()

    async def once() -> dict[str, Any]:
        started = time.perf_counter()
        report = await run_device_check(video, MICROPHONE, SPEAKER, limits, speaker_monitor=MONITOR)
        run: dict[str, Any] = {step.kind: step.duration_s for step in report.steps}
        run["total"] = time.perf_counter() - started
        run["ok"] = float(report.status == "ok")
        return run

    cold = asyncio.run(once())
    warm = [asyncio.run(once()) for _ in range(runs)]
    decode = statistics.median(_decode_only(video, limits.camera.frames) for _ in range(runs))
    p50 = {
        key: statistics.median(run[key] for run in warm)
        for key in ("total", "camera", "microphone", "speaker")
    }

    cam, mic, spk = limits.camera, limits.microphone, limits.speaker
    camera_media_s = cam.frames / CAMERA_FPS
    audio_media_s = (mic.settle_frames + mic.frames) / mic.samplerate + (spk.lead_s + spk.tone_s + spk.tail_s)
    camera_branch = max(0.0, p50["camera"] - decode) + camera_media_s
    audio_branch = p50["microphone"] + p50["speaker"] + audio_media_s
    orchestration = max(0.0, p50["total"] - max(p50["camera"], p50["microphone"] + p50["speaker"]))
    estimate = max(camera_branch, audio_branch) + orchestration
    return {
        "all_ok": all(run["ok"] for run in [cold, *warm]),
        "cold_s": round(cold["total"], 4),
        "warm_runs": runs,
        "warm_p50_s": {key: round(value, 4) for key, value in p50.items()},
        "warm_max_s": round(max(run["total"] for run in warm), 4),
        "ffv1_decode_of_camera_frames_s": round(decode, 4),
        "media_time_at_hardware_rate_s": {
            "camera": round(camera_media_s, 3),
            "microphone_then_speaker": round(audio_media_s, 3),
        },
        "estimated_on_hardware_s": round(estimate, 3),
        "target_s": TARGET_S,
        "meets_target": estimate < TARGET_S and cold["total"] < TARGET_S,
    }


def _decode_only(video: str, frames: int) -> float:
    """Open and decode the frames the camera check reads, measuring nothing."""
    import cv2

    started = time.perf_counter()
    capture = cv2.VideoCapture(video, cv2.CAP_FFMPEG)
    for _ in range(frames):
        capture.read()
    capture.release()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="warm full checks after the first")
    parser.add_argument("--child", metavar="VIDEO", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.runs)))
        return 0

    from devices import synthetic

    with tempfile.TemporaryDirectory(prefix="bench-devices-") as folder:
        base = Path(folder)
        video = synthetic.write_video(base / "normal.mkv", "normal", frames=40, width=640, height=480)
        pcm = synthetic.write_pcm(base / "tone.raw", "tone", seconds=2.0)
        alsa = synthetic.write_alsa_config(base / "alsa", pcm)
        done = subprocess.run(
            [sys.executable, __file__, "--child", str(video), "--runs", str(args.runs)],
            env={**os.environ, **alsa.env},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    if done.returncode != 0:
        print(done.stderr, file=sys.stderr)
        return 1
    result = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "full_check": json.loads(done.stdout),
        "frame_metrics": [frame_metric_cost(640, 480), frame_metric_cost(1280, 720)],
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
