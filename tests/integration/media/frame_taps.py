"""Every frame the media children send and show, through scripts/bench_call_tap (the benchmark's
frame logs), so that a test of two agents can count corrupt frames as the benchmark does.

A child started with ``tapped_media`` loads ``frame_tap`` (its ``sitecustomize``): it appends
each frame its camera sends and each remote frame it shows (after the key-frame gate) to
``<side>-<pid>.tap``. Its camera is a file whose frames carry ``first + i`` drawn by
``frame_tap.draw``. A frame shown is corrupt when it is unreadable (decoded against lost
references: smeared blocks), was never sent by the other side, or was sent before a frame already
shown (stale, gone backwards).
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path

import cv2

from devices import synthetic
from telehealth_client.media.consultation_call import MediaOptions
from telehealth_client.media.worker import Devices
from tests.support import bench_tap

WIDTH, HEIGHT, FPS = 640, 480, 30.0


frame_tap = bench_tap.frame_tap()


def tapped_media(tmp_path: Path, side: str, first: int, frames: int = 600) -> MediaOptions:
    """A child's media for ``side`` (patient or provider): a camera file showing ``first`` to
    ``first + frames - 1`` (20 s at 30 fps: no number is sent twice around a 10 s freeze), a tone as
    its microphone, a speaker writing nowhere; its frames logged in ``tmp_path/taps``."""
    tone = synthetic.write_pcm(tmp_path / f"{side}-tone.raw", "tone", seconds=30.0)
    alsa = synthetic.write_alsa_config(tmp_path / f"{side}-alsa", tone, loopback=False)
    # Motion JPEG: ten times faster to write than FFV1, and the blocks read back as drawn.
    video = tmp_path / f"{side}-tapped.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened(), f"OpenCV cannot write Motion JPEG video to {video}"
    try:
        for index in range(frames):
            writer.write(frame_tap.draw(first + index, WIDTH, HEIGHT))
    finally:
        writer.release()
    taps = tmp_path / "taps"
    taps.mkdir(exist_ok=True)
    env = {**os.environ, **alsa.env, **bench_tap.tap_env(taps, side)}
    devices = Devices(
        camera=str(video), camera_is_file=True, microphone=alsa.microphone, speaker=alsa.speaker
    )
    return MediaOptions(devices, env)


@dataclass(frozen=True)
class Shown:
    number: int
    at: float  # CLOCK_MONOTONIC: one clock for every process on the machine
    corrupt: bool


def shown_frames(taps: Path, receiver: str, sender: str) -> list[Shown]:
    """The frames ``receiver``'s children showed, each matched to the latest sending of its number
    by ``sender``'s children before it was shown."""
    sent: dict[int, list[float]] = {}
    received: list[tuple[int, float]] = []
    for path in taps.glob("*.tap"):
        side_sent, side_received = frame_tap.load(path)
        if path.name.startswith(f"{sender}-"):
            for number, at in side_sent:
                sent.setdefault(number, []).append(at)
        if path.name.startswith(f"{receiver}-"):
            received.extend(side_received)
    for times in sent.values():
        times.sort()
    newest = float("-inf")
    shown = []
    for number, at in sorted(received, key=lambda item: item[1]):
        times = sent.get(number, [])
        index = bisect.bisect_right(times, at) - 1
        sent_at = times[index] if index >= 0 and number != frame_tap.UNREADABLE else None
        shown.append(Shown(number, at, sent_at is None or sent_at < newest))
        if sent_at is not None:
            newest = max(newest, sent_at)
    return shown
