from __future__ import annotations

import cv2
import numpy as np
import pytest

from devices import frame_metrics
from devices.synthetic import video_frames


def test_brightness_is_the_mean_grey_level() -> None:
    frame = np.full((48, 64, 3), 77, np.uint8)
    metrics = frame_metrics.measure(frame)
    assert metrics.brightness == pytest.approx(77)
    assert metrics.sharpness == 0.0


def test_blur_lowers_sharpness_and_wide_frames_are_measured_at_640() -> None:
    sharp = video_frames("normal", 1, 1280, 720)[0]
    blurred = np.asarray(cv2.GaussianBlur(sharp, (0, 0), 4), dtype=np.uint8)
    assert frame_metrics.measure(blurred).sharpness < frame_metrics.measure(sharp).sharpness / 10
    small = video_frames("normal", 1, 640, 360)[0]
    # The same scene at two sizes lands in the same range once both are measured at 640 px.
    ratio = frame_metrics.measure(sharp).sharpness / frame_metrics.measure(small).sharpness
    assert 0.2 < ratio < 5


def test_repeated_frames_differ_by_nothing_and_live_ones_by_their_noise() -> None:
    frames = video_frames("frozen", 12, 320, 240, frozen_after=5)
    thumbs = [frame_metrics.measure(f).thumbnail for f in frames]
    assert frame_metrics.difference(thumbs[8], thumbs[9]) == 0.0
    assert frame_metrics.difference(thumbs[1], thumbs[2]) > 0.05


def test_grey_accepts_grey_bgr_and_bgra() -> None:
    for channels in ((), (3,), (4,)):
        frame = np.full((8, 8, *channels), 100, np.uint8)
        assert frame_metrics.grey(frame).shape == (8, 8)


def test_snapshot_is_a_jpeg_of_the_asked_width() -> None:
    jpeg = frame_metrics.snapshot_jpeg(video_frames("normal", 1, 640, 480)[0], 320)
    assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (240, 320, 3)
