"""A video track whose frames carry their own number in the pixels, and the reader of it.

The number is drawn as 16 large black or white blocks (one per bit), big enough to survive VP8 at
any bitrate aiortc picks: the receiving side reads back exactly what was sent, so a test can tell a
right frame from a corrupt, repeated or foreign one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
from aiortc import VideoStreamTrack
from av import VideoFrame

BITS = 16
BLOCK = 40
WIDTH, HEIGHT = 640, 480


def draw(number: int) -> np.ndarray[Any, Any]:
    image = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    for bit in range(BITS):
        row, column = divmod(bit, 8)
        value = 255 if number >> bit & 1 else 0
        y, x = 40 + row * (BLOCK + 20), 40 + column * (BLOCK + 20)
        image[y : y + BLOCK, x : x + BLOCK] = value
    return image


def block_centres(frame: VideoFrame) -> list[float]:
    """The mean grey of each bit's block centre in ``frame``, lowest bit first (any size: it is
    scaled to the drawn one first; the centre alone, as VP8 blurs a block's edges)."""
    image: Any = frame.to_ndarray(format="gray")
    if image.shape != (HEIGHT, WIDTH):
        image = np.asarray(frame.reformat(width=WIDTH, height=HEIGHT).to_ndarray(format="gray"))
    centres: list[float] = []
    for bit in range(BITS):
        row, column = divmod(bit, 8)
        y, x = 40 + row * (BLOCK + 20), 40 + column * (BLOCK + 20)
        centres.append(float(image[y + 10 : y + BLOCK - 10, x + 10 : x + BLOCK - 10].mean()))
    return centres


def read(frame: VideoFrame) -> int:
    """The number drawn into ``frame``: each block lighter than mid-grey is a 1 bit."""
    return sum(1 << bit for bit, centre in enumerate(block_centres(frame)) if centre > 128)


class NumberedVideoTrack(VideoStreamTrack):
    """640x480 at aiortc's default 30 fps, frame n showing n."""

    def __init__(self, first: int = 1) -> None:
        super().__init__()
        self.sent = first - 1

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        self.sent += 1
        frame = VideoFrame.from_ndarray(draw(self.sent), format="bgr24")
        frame.pts, frame.time_base = pts, time_base
        return frame


def write_numbered_video(path: Path, frames: int, first: int = 1, fps: float = 30.0) -> Path:
    """A lossless FFV1 video whose frame i shows ``first + i``: a camera source for CameraTrack."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), fps, (WIDTH, HEIGHT))
    assert writer.isOpened(), f"OpenCV cannot write FFV1 video to {path}"
    try:
        for index in range(frames):
            writer.write(draw(first + index))
    finally:
        writer.release()
    return path
