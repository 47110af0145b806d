"""Camera check through OpenCV: a fixed number of frames within a deadline.

Blocking; the async entry point runs it in a worker thread.
"""

from __future__ import annotations

import os
import stat
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from devices import frame_metrics
from devices.listing import list_cameras
from devices.report import CameraResult, MetricCheck, Status, summarise
from devices.sources import CameraSource, DeviceUsageError, parse_camera_source
from devices.thresholds import CameraThresholds

_V4L_MAJOR = 81  # Linux character-device major number of every video4linux node


def check_camera(source: CameraSource | str, thresholds: CameraThresholds | None = None) -> CameraResult:
    limits = thresholds or CameraThresholds()
    started = time.perf_counter()
    try:
        src = parse_camera_source(source) if isinstance(source, str) else source
    except DeviceUsageError as error:
        return _failed(str(source), limits, f"invalid camera source: {error.reason}", started)
    # OpenCV crashes on index -1; nothing negative goes further than this.
    if src.kind == "index" and int(src.target) < 0:
        return _failed(src.label, limits, "invalid camera source: index must be non-negative", started)
    problem = _unavailable(src)
    if problem is not None:
        return _failed(src.label, limits, problem, started)
    capture = _open(src, limits.deadline_s)
    try:
        if not capture.isOpened():
            reason = {
                "file": "video file cannot be decoded",
                "url": "camera stream cannot be opened",
            }.get(src.kind, "camera cannot be opened")
            return _failed(src.label, limits, reason, started)
        return _read_and_judge(capture, src, limits, started)
    finally:
        capture.release()


def _unavailable(src: CameraSource) -> str | None:
    """Why the source cannot be opened, found before OpenCV is asked (it is slow or noisy to fail)."""
    if src.kind == "url":
        return None
    if src.kind == "index":
        if not sys.platform.startswith("linux"):
            return None
        path = Path(f"/dev/video{src.target}")
    else:
        path = Path(str(src.target))
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "camera not found"
    except OSError as error:
        return f"camera not accessible: {error.strerror or error.__class__.__name__}"
    if src.kind == "file":
        if not stat.S_ISREG(mode):
            return "camera source is not a regular file"
        return None if os.access(path, os.R_OK) else "video file not readable: permission denied"
    if not stat.S_ISCHR(mode) or (
        sys.platform.startswith("linux") and os.major(path.stat().st_rdev) != _V4L_MAJOR
    ):
        return "not a video device"
    return None if os.access(path, os.R_OK | os.W_OK) else "camera not accessible: permission denied"


def _open(src: CameraSource, deadline_s: float) -> cv2.VideoCapture:
    timeout_ms = max(1, int(deadline_s * 1000))
    if src.kind == "index":
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        return cv2.VideoCapture(int(src.target), backend)
    if src.kind == "device":
        return cv2.VideoCapture(str(src.target), cv2.CAP_V4L2)
    # Files and streams go through FFmpeg, whose open and read otherwise wait forever on a dead server.
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    return cv2.VideoCapture(str(src.target), cv2.CAP_FFMPEG, params)


def _read_and_judge(
    capture: cv2.VideoCapture, src: CameraSource, limits: CameraThresholds, started: float
) -> CameraResult:
    deadline = started + limits.deadline_s
    measured: list[frame_metrics.FrameMetrics] = []
    arrivals: list[float] = []
    frozen_pairs = 0
    last_frame: frame_metrics.Frame | None = None
    timed_out = False
    while len(measured) < limits.frames:
        if time.perf_counter() > deadline:
            timed_out = True
            break
        ok, image = capture.read()
        if not ok or image is None:
            break
        frame = np.asarray(image, dtype=np.uint8)
        arrivals.append(time.perf_counter())
        metrics = frame_metrics.measure(frame)
        if (
            measured
            and frame_metrics.difference(measured[-1].thumbnail, metrics.thumbnail) <= limits.frozen_diff
        ):
            frozen_pairs += 1
        measured.append(metrics)
        last_frame = frame

    count = len(measured)
    result = CameraResult(device=src.label, status="ok", frames_read=count, frames_wanted=limits.frames)
    checks = [_delivery_check(count, limits.frames, timed_out, limits.deadline_s)]
    if last_frame is not None:
        result.height, result.width = int(last_frame.shape[0]), int(last_frame.shape[1])
        result.brightness = round(statistics.median(m.brightness for m in measured), 2)
        result.sharpness = round(statistics.median(m.sharpness for m in measured), 2)
        result.snapshot_jpeg = frame_metrics.snapshot_jpeg(last_frame, limits.snapshot_width)
        brightness = _brightness_check(result.brightness, limits)
        checks.append(brightness)
        # Focus cannot be judged in a black or white-out image: its own reason says enough.
        if brightness.status != "fail":
            checks.append(_sharpness_check(result.sharpness, limits))
    if count >= 2:
        # Timed from the first frame: opening and the first frame's warm-up are not the frame rate.
        span = arrivals[-1] - arrivals[0]
        result.fps = round((count - 1) / span, 2) if span > 0 else None
        result.frozen_ratio = round(frozen_pairs / (count - 1), 4)
        checks += [_fps_check(result.fps, limits), _frozen_check(result.frozen_ratio, limits)]
    result.checks = checks
    result.status, result.reasons = summarise(checks)
    result.duration_s = round(time.perf_counter() - started, 4)
    return result


def _failed(label: str, limits: CameraThresholds, reason: str, started: float) -> CameraResult:
    check = MetricCheck(name="open", value=None, status="fail", reason=reason)
    return CameraResult(
        device=label,
        status="fail",
        reasons=[reason],
        checks=[check],
        frames_wanted=limits.frames,
        duration_s=round(time.perf_counter() - started, 4),
    )


def _delivery_check(count: int, wanted: int, timed_out: bool, deadline_s: float) -> MetricCheck:
    status: Status = "ok"
    reason = None
    if count == 0:
        status, reason = "fail", "camera delivered no frames"
    elif timed_out:
        status, reason = "fail", f"camera too slow: {count} of {wanted} frames in {deadline_s:g} s"
    elif count < wanted:
        status, reason = "fail", f"camera stopped delivering frames after {count} of {wanted}"
    return MetricCheck(name="frames", value=count, unit="frames", status=status, reason=reason)


def _brightness_check(value: float, limits: CameraThresholds) -> MetricCheck:
    status: Status = "ok"
    reason = None
    if value < limits.dark_fail:
        status, reason = "fail", "image too dark"
    elif value > limits.bright_fail:
        status, reason = "fail", "image too bright"
    elif value < limits.dark_warn:
        status, reason = "warn", "image dark"
    elif value > limits.bright_warn:
        status, reason = "warn", "image very bright"
    return MetricCheck(name="brightness", value=value, unit="grey level", status=status, reason=reason)


def _sharpness_check(value: float, limits: CameraThresholds) -> MetricCheck:
    status: Status = "ok"
    reason = None
    if value < limits.sharpness_fail:
        status, reason = "fail", "image blurred"
    elif value < limits.sharpness_warn:
        status, reason = "warn", "image slightly blurred"
    return MetricCheck(name="sharpness", value=value, unit="Laplacian variance", status=status, reason=reason)


def _fps_check(value: float | None, limits: CameraThresholds) -> MetricCheck:
    status: Status = "ok"
    reason = None
    if value is not None and value < limits.min_fps_fail:
        status, reason = "fail", f"frame rate too low ({value:.1f} fps)"
    elif value is not None and value < limits.min_fps_warn:
        status, reason = "warn", f"frame rate low ({value:.1f} fps)"
    return MetricCheck(name="fps", value=value, unit="fps", status=status, reason=reason)


def _frozen_check(value: float, limits: CameraThresholds) -> MetricCheck:
    status: Status = "ok"
    reason = None
    if value >= limits.frozen_fail:
        status, reason = "fail", "image frozen"
    elif value >= limits.frozen_warn:
        status, reason = "warn", "image partly frozen"
    return MetricCheck(name="frozen", value=value, unit="share of frames", status=status, reason=reason)


def default_camera() -> CameraSource | None:
    """The lowest-numbered ``/dev/video*`` node, if any."""
    cameras = list_cameras()
    return CameraSource("device", cameras[0].path) if cameras else None
