from __future__ import annotations

import json

from pydantic import TypeAdapter

from devices.report import (
    CameraResult,
    DeviceReport,
    MetricCheck,
    MicrophoneResult,
    StepResult,
    summarise,
    worst,
)


def test_worst_status() -> None:
    assert worst([]) == "ok"
    assert worst(["ok", "warn"]) == "warn"
    assert worst(["warn", "fail", "ok"]) == "fail"


def test_summary_puts_failures_before_warnings_and_skips_passing_checks() -> None:
    checks = [
        MetricCheck(name="a", value=1, status="warn", reason="warned"),
        MetricCheck(name="b", value=2, status="ok"),
        MetricCheck(name="c", value=3, status="fail", reason="failed"),
    ]
    assert summarise(checks) == ("fail", ["failed", "warned"])


def test_report_is_plain_json_without_the_snapshot() -> None:
    camera = CameraResult(device="/dev/video0", status="ok", snapshot_jpeg=b"\xff\xd8face")
    mic = MicrophoneResult(device="USB", status="fail", rms_dbfs=-120.0, reasons=["microphone silent"])
    report = DeviceReport(status="fail", camera=camera, microphone=mic)
    text = report.model_dump_json()
    data = json.loads(text)  # strict JSON: no NaN or Infinity
    assert "snapshot" not in text
    assert data["microphone"]["rms_dbfs"] == -120.0
    assert [step.kind for step in report.steps] == ["camera", "microphone"]


def test_step_results_parse_back_by_kind() -> None:
    adapter: TypeAdapter[StepResult] = TypeAdapter(StepResult)
    step = adapter.validate_json(MicrophoneResult(device="x", status="ok", frames=10).model_dump_json())
    assert isinstance(step, MicrophoneResult) and step.frames == 10
