"""The async entry point and the CLI functions in this process (camera only: no PortAudio here)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from devices import CameraResult, DeviceThresholds, DeviceUsageError, StepResult, run_device_check
from devices.camera import check_camera
from devices.cli import add_check_devices_arguments, main, run_check_devices
from devices.sources import CameraSource
from devices.thresholds import CameraThresholds

pytestmark = pytest.mark.integration
CAMERA_ONLY = ("--skip", "microphone", "--skip", "speaker")


async def test_each_step_is_announced_and_reported(videos: dict[str, Path]) -> None:
    seen: list[StepResult] = []
    limits = DeviceThresholds(camera=CameraThresholds(frames=10))
    report = await run_device_check(
        str(videos["normal"]), None, None, limits, seen.append, skip={"microphone", "speaker"}
    )
    assert report.status == "ok"
    assert report.microphone is None and report.speaker is None
    assert seen == [report.camera]
    assert isinstance(seen[0], CameraResult) and seen[0].frames_read == 10
    assert report.duration_s >= seen[0].duration_s


async def test_report_status_is_the_worst_step(videos: dict[str, Path]) -> None:
    report = await run_device_check(str(videos["frozen"]), skip=("microphone", "speaker"))
    assert report.status == "fail"
    assert report.camera is not None and report.camera.reasons == ["image frozen"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"camera": "-1"}, "camera"),
        ({"camera": ""}, "camera"),
        ({"microphone": "2.5"}, "microphone"),
        ({"skip": ("camera", "microphone", "speaker")}, "skip"),
        ({"skip": ("keyboard",)}, "skip"),
    ],
)
async def test_malformed_arguments_raise_usage_errors_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(DeviceUsageError) as caught:
        await run_device_check(**kwargs)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_cli_prints_the_step_then_the_summary(
    videos: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--camera", str(videos["blurred"]), *CAMERA_ONLY])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out[0].startswith(f"camera     FAIL  {videos['blurred']}  320x240")
    assert out[1].strip() == "- image blurred"
    assert out[-1].startswith("summary: FAIL (camera: image blurred) in ")


def test_cli_json_is_only_the_report(
    videos: dict[str, Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    snapshot = tmp_path / "preview.jpg"
    code = main(["--camera", str(videos["normal"]), *CAMERA_ONLY, "--json", "--snapshot", str(snapshot)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["status"] == "ok" and report["camera"]["width"] == 320
    assert snapshot.read_bytes()[:2] == b"\xff\xd8"  # a JPEG, saved only on request


def test_cli_usage_errors_exit_2_naming_the_field(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--camera", "-1"])
    assert caught.value.code == 2
    assert "argument --camera: index must be a non-negative integer, got '-1'" in capsys.readouterr().err


def test_run_check_devices_validates_arguments_it_did_not_parse(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    add_check_devices_arguments(parser)
    args = parser.parse_args(list(CAMERA_ONLY))
    args.camera = "1e3"  # as if set by a caller that skipped argparse's checks
    assert run_check_devices(args) == 2
    assert "--camera: index must be a non-negative integer, got '1e3'" in capsys.readouterr().err


async def test_a_failing_listener_does_not_stop_the_check(
    videos: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(step: StepResult) -> None:
        raise RuntimeError("listener bug")

    report = await run_device_check(str(videos["normal"]), on_step=broken, skip=("microphone", "speaker"))
    assert report.status == "ok"
    assert "device check listener failed device_kind=camera" in caplog.text


def test_negative_index_built_by_hand_never_reaches_opencv() -> None:
    result = check_camera(CameraSource("index", -1))
    assert result.status == "fail"
    assert result.reasons == ["invalid camera source: index must be non-negative"]
