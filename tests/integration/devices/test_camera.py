"""The camera check through real OpenCV on generated lossless videos and absent devices."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from devices.camera import check_camera
from devices.thresholds import CameraThresholds
from tests.support.devices import RunCli

pytestmark = pytest.mark.integration


def test_normal_video_passes_with_its_measurements(videos: dict[str, Path]) -> None:
    result = check_camera(str(videos["normal"]))
    assert result.status == "ok", result.reasons
    assert (result.width, result.height) == (320, 240)
    assert result.frames_read == result.frames_wanted == 30
    assert result.fps is not None and result.fps > 30  # decoding a file outruns any camera
    assert result.brightness is not None and 110 < result.brightness < 150
    assert result.sharpness is not None and result.sharpness > CameraThresholds().sharpness_warn
    assert result.frozen_ratio == 0.0
    assert [check.name for check in result.checks] == ["frames", "brightness", "sharpness", "fps", "frozen"]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("dark", "image too dark"), ("blurred", "image blurred"), ("frozen", "image frozen")],
)
def test_bad_video_fails_for_the_right_reason(videos: dict[str, Path], kind: str, reason: str) -> None:
    result = check_camera(str(videos[kind]))
    assert result.status == "fail"
    assert result.reasons == [reason]


def test_noise_is_neither_frozen_nor_blurred(videos: dict[str, Path]) -> None:
    result = check_camera(str(videos["noise"]))
    assert result.frozen_ratio == 0.0
    assert result.status == "ok", result.reasons


def test_video_that_stops_after_five_frames_is_reported(videos: dict[str, Path]) -> None:
    result = check_camera(str(videos["short"]))
    assert result.status == "fail"
    assert result.frames_read == 5
    assert result.reasons == ["camera stopped delivering frames after 5 of 30"]
    assert result.brightness is not None  # what was delivered is still measured


def test_frame_count_comes_from_the_thresholds(videos: dict[str, Path]) -> None:
    result = check_camera(str(videos["normal"]), CameraThresholds(frames=12))
    assert result.frames_read == 12
    assert result.status == "ok"


def test_warn_thresholds_give_a_warning_not_a_failure(videos: dict[str, Path]) -> None:
    limits = CameraThresholds(dark_warn=140, dark_fail=20)
    result = check_camera(str(videos["normal"]), limits)
    assert result.status == "warn"
    assert result.reasons == ["image dark"]


def test_missing_device_node_fails_fast() -> None:
    started = time.perf_counter()
    result = check_camera("/dev/video7")
    assert result.status == "fail"
    assert result.reasons == ["camera not found"]
    assert time.perf_counter() - started < 1.0


def test_missing_index_fails_without_reaching_opencv() -> None:
    result = check_camera("7")
    assert result.reasons == ["camera not found"]
    assert result.device == "index 7"


def test_negative_index_is_a_verdict_not_a_crash() -> None:
    result = check_camera("-1")
    assert result.status == "fail"
    assert "non-negative integer" in result.reasons[0]


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda tmp: tmp / "absent.mkv", "camera not found"),
        (lambda tmp: tmp, "camera source is not a regular file"),
        (lambda tmp: _write(tmp / "garbage.mkv", b"not a video" * 100), "video file cannot be decoded"),
        (lambda tmp: _write(tmp / "empty.mkv", b""), "video file cannot be decoded"),
        (lambda tmp: Path("/dev/null"), "not a video device"),
        (lambda tmp: Path("/dev/video7"), "camera not found"),
    ],
)
def test_unusable_sources_fail_with_a_reason(tmp_path: Path, make: object, reason: str) -> None:
    source = make(tmp_path)  # type: ignore[operator]
    result = check_camera(str(source))
    assert result.status == "fail"
    assert result.reasons == [reason]


def test_unreadable_file_is_reported(videos: dict[str, Path], tmp_path: Path, run_cli: RunCli) -> None:
    locked = tmp_path / "locked.mkv"
    locked.write_bytes(videos["normal"].read_bytes())
    locked.chmod(0)
    if os.geteuid() != 0:
        assert check_camera(str(locked)).reasons == ["video file not readable: permission denied"]
        return
    # Root reads anything: check in a child process that has lost the capabilities that allow it.
    no_override = "-dac_override,-dac_read_search"
    prefix = ["setpriv", f"--inh-caps={no_override}", f"--bounding-set={no_override}"]
    args = ["--camera", str(locked), "--skip", "microphone", "--skip", "speaker", "--json"]
    done = run_cli(*args, prefix=prefix)
    assert done.code == 1, done.stderr
    assert json.loads(done.stdout)["camera"]["reasons"] == ["video file not readable: permission denied"]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        yield server.getsockname()[1]


def test_stream_that_never_answers_fails_at_the_deadline(silent_server: int) -> None:
    url = f"http://kiosk:s3cret@127.0.0.1:{silent_server}/camera.mjpg?token=abc#x"
    started = time.perf_counter()
    result = check_camera(url, CameraThresholds(deadline_s=0.5))
    assert result.status == "fail"
    assert result.reasons == ["camera stream cannot be opened"]
    assert time.perf_counter() - started < 5.0
    # Credentials and query strings never reach the report.
    assert result.device == f"http://127.0.0.1:{silent_server}/camera.mjpg"
    dumped = result.model_dump_json()
    assert "s3cret" not in dumped and "token" not in dumped


def test_snapshot_is_a_small_jpeg_kept_out_of_the_report(videos: dict[str, Path]) -> None:
    result = check_camera(str(videos["normal"]), CameraThresholds(snapshot_width=160))
    assert result.snapshot_jpeg is not None
    image = cv2.imdecode(np.frombuffer(result.snapshot_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (120, 160, 3)
    assert "snapshot" not in result.model_dump() and "snapshot" not in result.model_dump_json()


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_cli_output_is_free_of_library_noise(tmp_path: Path, run_cli: RunCli) -> None:
    garbage = _write(tmp_path / "garbage.mkv", b"not a video" * 100)
    done = run_cli("--camera", str(garbage), "--skip", "microphone", "--skip", "speaker")
    assert done.code == 1
    assert done.stdout.splitlines()[1].strip() == "- video file cannot be decoded"
    assert done.stderr == ""


def _checkerboard_video(path: Path, dark: int, light: int, frames: int = 30) -> Path:
    """Pixels alternating between two grey levels: the mean is exactly half-way between them."""
    ys, xs = np.indices((240, 320))
    grey = np.where((ys + xs) % 2 == 0, dark, light).astype(np.uint8)
    frame = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), 30.0, (320, 240))
    try:
        for _ in range(frames):
            writer.write(frame)
    finally:
        writer.release()
    return path


@pytest.mark.parametrize(
    ("dark", "light", "status", "reason"),
    [
        (34, 35, "fail", "image too dark"),  # 34.5: just under the default dark_fail (35)
        (35, 36, "warn", "image dark"),  # 35.5: just over it, still under dark_warn (60)
        (59, 60, "warn", "image dark"),  # 59.5: just under dark_warn
        (60, 61, "ok", None),  # 60.5: just over it
    ],
)
def test_default_dark_thresholds_hold_to_half_a_grey_level(
    tmp_path: Path, dark: int, light: int, status: str, reason: str | None
) -> None:
    # Moving either default by a single grey level changes one of these verdicts.
    result = check_camera(str(_checkerboard_video(tmp_path / "grey.mkv", dark, light)))
    (brightness,) = [check for check in result.checks if check.name == "brightness"]
    assert brightness.value == (dark + light) / 2
    assert (brightness.status, brightness.reason) == (status, reason)
