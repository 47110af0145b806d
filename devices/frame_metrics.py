"""Per-frame image measurements, cheap enough to run on every frame read.

Sharpness is measured at a fixed 640 px width so one threshold fits every
camera resolution, and bounded cost per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

Frame = NDArray[np.uint8]
_METRIC_WIDTH = 640
_DIFF_SIZE = (160, 120)


@dataclass(frozen=True)
class FrameMetrics:
    brightness: float
    sharpness: float
    thumbnail: NDArray[np.float32]  # small grey image, compared with the next frame's to find frozen video


def grey(frame: Frame) -> Frame:
    if frame.ndim == 2:
        return frame
    if frame.shape[2] == 4:
        return np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGRA2GRAY), dtype=np.uint8)
    return np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), dtype=np.uint8)


def measure(frame: Frame) -> FrameMetrics:
    g = grey(frame)
    height, width = g.shape[:2]
    if width > _METRIC_WIDTH:
        size = (_METRIC_WIDTH, max(1, round(height * _METRIC_WIDTH / width)))
        g = np.asarray(cv2.resize(g, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    # CV_16S keeps the Laplacian exact for 8-bit input at half the cost of float.
    laplacian = cv2.Laplacian(g, cv2.CV_16S, ksize=1)
    _, std = cv2.meanStdDev(laplacian)
    # Float, so sensor noise below one grey level still tells a live image from a repeated one.
    thumbnail = cv2.resize(g.astype(np.float32), _DIFF_SIZE, interpolation=cv2.INTER_AREA)
    return FrameMetrics(
        brightness=float(cv2.mean(g)[0]),
        sharpness=float(std[0][0]) ** 2,
        thumbnail=np.asarray(thumbnail, dtype=np.float32),
    )


def difference(a: NDArray[np.float32], b: NDArray[np.float32]) -> float:
    """Mean absolute grey-level difference of two thumbnails, 0-255."""
    return float(cv2.mean(cv2.absdiff(a, b))[0])


def snapshot_jpeg(frame: Frame, width: int, quality: int = 80) -> bytes | None:
    height = max(1, round(frame.shape[0] * width / frame.shape[1]))
    small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return bytes(encoded.tobytes()) if ok else None
