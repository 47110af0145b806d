"""Numbered frames for scripts/bench_call.py: the pattern drawn into the video file, read back from
frames on both sides, and a per-process log of every frame sent and received.

A frame carries a 12-bit number and its complement as 24 black or white blocks (a layout scaled to
the frame size, so 640x480 and 1280x720 read the same way). A frame whose blocks are not clearly
black or white, or whose two halves disagree, is unreadable: after a loss aiortc's VP8 decoder
outputs such frames (references missing), which is what "corrupt frame shown" counts.

The log appends ``(number, time.monotonic())`` to ``$BENCH_CALL_TAP_DIR/<side>-<pid>.tap`` with
one write(2) per frame (a few microseconds into the page cache, nothing buffered in the process):
a media child killed with SIGKILL leaves its log complete up to its last frame, so the frames the
other side shows after the kill are matched to their sending. ``CLOCK_MONOTONIC`` is one clock for
every process on the machine, so a receive time minus the matching send time in the other process
is the frame's latency.
"""

from __future__ import annotations

import atexit
import os
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

BITS: Final = 12
COLUMNS: Final = 8
ROWS: Final = 3  # 12 bits, then their 12 complements
MODULO: Final = 1 << BITS
UNREADABLE: Final = -1


def _blocks(width: int) -> list[tuple[int, int, int]]:
    """(x, y, size) of each block, number bits first, then the complement's."""
    size = width // 16
    step = size * 3 // 2
    return [
        (size + column * step, size + row * step, size) for row in range(ROWS) for column in range(COLUMNS)
    ]


def draw(number: int, width: int, height: int) -> np.ndarray[Any, Any]:
    """A grey BGR image showing ``number`` (modulo 4096)."""
    image = np.full((height, width, 3), 128, np.uint8)
    value = number % MODULO
    bits = [value >> bit & 1 for bit in range(BITS)] + [1 - (value >> bit & 1) for bit in range(BITS)]
    for (x, y, size), bit in zip(_blocks(width), bits, strict=True):
        image[y : y + size, x : x + size] = 255 if bit else 0
    return image


def _luma_rows(frame: Any) -> np.ndarray[Any, Any]:
    """A 2-D view of the frame's brightness without converting it (a copy costs milliseconds at 720p)."""
    name = frame.format.name
    plane = frame.planes[0]
    raw = np.frombuffer(memoryview(plane), np.uint8)
    rows = raw.reshape(plane.height, plane.line_size)
    if name in ("yuv420p", "yuvj420p", "nv12", "gray"):
        return rows[:, : frame.width]
    if name in ("bgr24", "rgb24"):
        return rows[:, 0 : frame.width * 3 : 3]  # one colour channel: the blocks are grey
    return np.asarray(frame.to_ndarray(format="gray"))


def read(frame: Any) -> int:
    """The number a frame shows, or UNREADABLE."""
    rows = _luma_rows(frame)
    bits: list[int] = []
    for x, y, size in _blocks(frame.width):
        quarter = size // 4
        centre = float(rows[y + quarter : y + size - quarter, x + quarter : x + size - quarter].mean())
        if centre > 170:
            bits.append(1)
        elif centre < 85:
            bits.append(0)
        else:
            return UNREADABLE
    number = sum(bit << index for index, bit in enumerate(bits[:BITS]))
    if any(bits[index] == bits[BITS + index] for index in range(BITS)):
        return UNREADABLE
    return number


class FrameLog:
    """Frames this process sent (handed to the encoder) and received (shown), with their times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def on_sent(self, frame: Any) -> None:
        self._append("s", read(frame))

    def on_received(self, frame: Any) -> None:
        self._append("r", read(frame))

    def _append(self, kind: str, number: int) -> None:
        # Straight to the file (no buffer to lose): the process may be killed with SIGKILL.
        os.write(self._fd, f"{kind} {number} {time.monotonic():.6f}\n".encode())

    def close(self) -> None:
        os.close(self._fd)


LOG: FrameLog | None = None


def install() -> FrameLog:
    """Log this process's frames: the camera track's and every remote frame a MediaCall shows."""
    global LOG
    from telehealth_client.media import call, tracks

    directory = Path(os.environ["BENCH_CALL_TAP_DIR"])
    side = os.environ.get("BENCH_CALL_TAP_SIDE", "peer")
    log = LOG = FrameLog(directory / f"{side}-{os.getpid()}.tap")
    atexit.register(log.close)

    camera_recv = tracks.CameraTrack.recv

    async def recv(self: tracks.CameraTrack) -> Any:
        frame = await camera_recv(self)
        log.on_sent(frame)
        return frame

    tracks.CameraTrack.recv = recv  # type: ignore[method-assign]

    call_init = call.MediaCall.__init__

    def init(self: call.MediaCall, *args: Any, on_frame: Any = None, **kwargs: Any) -> None:
        def shown(kind: str, frame: Any) -> None:
            if kind == "video":
                log.on_received(frame)
            if on_frame is not None:
                on_frame(kind, frame)

        call_init(self, *args, on_frame=shown, **kwargs)

    call.MediaCall.__init__ = init  # type: ignore[method-assign]
    return log


def load(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(sent, received) from a written log."""
    sent: list[tuple[int, float]] = []
    received: list[tuple[int, float]] = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        kind, number, at = line.split()
        (sent if kind == "s" else received).append((int(number), float(at)))
    return sent, received
