"""Test media for running the checks through the real libraries on machines without hardware.

Videos are lossless (FFV1 in Matroska) so a frame reads back exactly as
drawn. PCM files are raw S16_LE mono. The ALSA configuration exposes a
capture device that replays such a file and a playback device whose output
another capture device can hear, for use with ``ALSA_CONFIG_PATH`` in a fresh
process (PortAudio reads the ALSA configuration once per process).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from devices.audio_analysis import FULL_SCALE

VideoKind = Literal["normal", "dark", "blurred", "frozen", "noise", "short"]
PcmKind = Literal["tone", "silence", "clipped", "noise", "dc"]
VIDEO_KINDS: tuple[VideoKind, ...] = ("normal", "dark", "blurred", "frozen", "noise", "short")
SHORT_VIDEO_FRAMES = 5

MICROPHONE = "kiosk_mic"
SPEAKER = "kiosk_speaker"
MONITOR = "kiosk_monitor"


def scene(width: int, height: int, step: int, rng: np.random.Generator) -> NDArray[np.uint8]:
    """A mid-grey checkerboard with a bright square moving across it and light sensor noise."""
    cell = max(4, width // 40)
    ys, xs = np.indices((height, width))
    board = np.where(((ys // cell) + (xs // cell)) % 2 == 0, 80, 170).astype(np.float32)
    side = height // 4
    x0 = (step * 7) % max(1, width - side)
    y0 = (height - side) // 2
    board[y0 : y0 + side, x0 : x0 + side] = 230
    board += rng.normal(0.0, 1.5, board.shape).astype(np.float32)
    grey = np.clip(board, 0, 255).astype(np.uint8)
    return np.asarray(cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR), dtype=np.uint8)


def video_frames(
    kind: VideoKind, count: int, width: int = 640, height: int = 480, frozen_after: int = 10, seed: int = 7
) -> list[NDArray[np.uint8]]:
    rng = np.random.default_rng(seed)
    if kind == "short":
        count = min(count, SHORT_VIDEO_FRAMES)
    frames: list[NDArray[np.uint8]] = []
    for step in range(count):
        if kind == "noise":
            frames.append(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
            continue
        if kind == "frozen" and step >= frozen_after:
            frames.append(frames[-1])
            continue
        frame = scene(width, height, step, rng)
        if kind == "dark":
            # A dark room still has sensor noise, so the dark video is not also a frozen one.
            dim = frame.astype(np.float32) * 0.08 + rng.normal(0.0, 1.5, frame.shape[:2])[..., None]
            frame = np.clip(dim, 0, 255).astype(np.uint8)
        elif kind == "blurred":
            frame = np.asarray(cv2.GaussianBlur(frame, (0, 0), sigmaX=6.0), dtype=np.uint8)
        frames.append(frame)
    return frames


def write_video(
    path: Path,
    kind: VideoKind,
    frames: int = 40,
    width: int = 640,
    height: int = 480,
    fps: float = 30.0,
    frozen_after: int = 10,
) -> Path:
    """A lossless FFV1/Matroska video; ``short`` stops after five frames whatever ``frames`` says."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write FFV1 video to {path}")
    try:
        for frame in video_frames(kind, frames, width, height, frozen_after):
            writer.write(frame)
    finally:
        writer.release()
    return path


def pcm_samples(
    kind: PcmKind,
    seconds: float,
    samplerate: int = 48_000,
    level_dbfs: float = -20.0,
    frequency_hz: float = 1_000.0,
) -> NDArray[np.int16]:
    """``level_dbfs`` is the RMS level of the result (dBFS against a full-scale square)."""
    count = round(seconds * samplerate)
    rms = FULL_SCALE * 10 ** (level_dbfs / 20)
    t = np.arange(count) / samplerate
    if kind == "silence":
        wave = np.zeros(count)
    elif kind == "tone":
        wave = rms * np.sqrt(2) * np.sin(2 * np.pi * frequency_hz * t)
    elif kind == "clipped":
        # Twice full scale, cut at the rails: what an overdriven preamp delivers.
        wave = 2 * FULL_SCALE * np.sin(2 * np.pi * frequency_hz * t)
    elif kind == "noise":
        wave = np.random.default_rng(11).normal(0.0, rms, count)
    else:  # "dc": a tone riding on a constant offset of a quarter of full scale
        wave = FULL_SCALE / 4 + rms * np.sqrt(2) * np.sin(2 * np.pi * frequency_hz * t)
    return np.clip(np.round(wave), -FULL_SCALE, FULL_SCALE - 1).astype(np.int16)


def write_pcm(
    path: Path,
    kind: PcmKind,
    seconds: float = 2.0,
    samplerate: int = 48_000,
    level_dbfs: float = -20.0,
    frequency_hz: float = 1_000.0,
) -> Path:
    """Raw S16_LE mono. Make it longer than any read: the ALSA file plugin replays stale data past the end."""
    pcm_samples(kind, seconds, samplerate, level_dbfs, frequency_hz).astype("<i2").tofile(path)
    return path


@dataclass(frozen=True)
class AlsaSetup:
    config: Path
    microphone: str | None  # capture device replaying the PCM file
    speaker: str | None  # playback device; writes what it plays to ``played``
    monitor: str | None  # capture device reading ``played``: hears the speaker
    played: Path | None

    @property
    def env(self) -> dict[str, str]:
        return {"ALSA_CONFIG_PATH": str(self.config)}


def write_alsa_config(
    directory: Path, microphone_pcm: Path | None = None, speaker: bool = True, loopback: bool = True
) -> AlsaSetup:
    """An ALSA configuration that replaces the system one (no sound card needed).

    All devices are ``file`` plugins over a ``null`` slave, which has no
    real-time pacing: reads and writes return at once. ``default`` is always
    defined: PortAudio 19.6 aborts on a configuration where every listed
    device opens and none is called ``default``. Without any device,
    ``default`` points at a sound card that does not exist.
    """
    directory.mkdir(parents=True, exist_ok=True)
    played = directory / "played.raw" if speaker and loopback else None
    # The slave is named "null" so PortAudio, which skips that name, does not list it.
    lines = ["pcm.null { type null }"]
    if microphone_pcm is not None:
        lines.append(
            _file_pcm(MICROPHONE, "Synthetic microphone", infile=microphone_pcm, outfile=Path("/dev/null"))
        )
    if speaker:
        lines.append(
            _file_pcm(SPEAKER, "Synthetic speaker", infile=None, outfile=played or Path("/dev/null"))
        )
    if played is not None:
        played.touch()  # the monitor opens it for reading before anything is played
        lines.append(
            _file_pcm(MONITOR, "Hears the synthetic speaker", infile=played, outfile=Path("/dev/null"))
        )
    if microphone_pcm is not None or speaker:
        sides = []
        if speaker:
            sides.append(f'playback.pcm "{SPEAKER}"')
        if microphone_pcm is not None:
            sides.append(f'capture.pcm "{MICROPHONE}"')
        lines.append("pcm.default { type asym; " + "; ".join(sides) + " }")
    else:
        lines.append("pcm.default { type hw; card 31 }")
    config = directory / "asound.conf"
    config.write_text("\n".join(lines) + "\n")
    return AlsaSetup(
        config=config,
        microphone=MICROPHONE if microphone_pcm is not None else None,
        speaker=SPEAKER if speaker else None,
        monitor=MONITOR if played is not None else None,
        played=played,
    )


def _file_pcm(name: str, description: str, infile: Path | None, outfile: Path) -> str:
    entries = ["type file", 'slave.pcm "null"', f"file {_quoted(outfile)}", 'format "raw"']
    if infile is not None:
        entries.append(f"infile {_quoted(infile)}")
    entries.append(f'hint {{ show on; description "{description}" }}')
    return f"pcm.{name} {{ " + "; ".join(entries) + " }"


def _quoted(path: Path) -> str:
    text = str(path.resolve())
    if any(char in text for char in '"\\\n'):
        raise ValueError(f"path not usable in an ALSA configuration: {text!r}")
    return f'"{text}"'
