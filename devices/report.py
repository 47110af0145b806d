"""The device check report: every measurement, verdict, reason and duration.

Everything here is JSON-serialisable and free of PHI: device names, sizes and
levels only. The camera snapshot (a picture of whoever stands at the kiosk)
lives on the camera result but is excluded from every serialisation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["ok", "warn", "fail"]
DeviceKind = Literal["camera", "microphone", "speaker"]
DEVICE_KINDS: tuple[DeviceKind, ...] = ("camera", "microphone", "speaker")

_RANK: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}


def worst(statuses: list[Status]) -> Status:
    """The most severe status; ``ok`` for an empty list."""
    return max(statuses, key=_RANK.__getitem__, default="ok")


class MetricCheck(BaseModel):
    """One measurement judged against its thresholds."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float | None
    unit: str = ""
    status: Status
    reason: str | None = None


class _Step(BaseModel):
    device: str | None = Field(description="the device or source as checked, credentials removed")
    status: Status
    reasons: list[str] = Field(default_factory=list, description="human reasons, most severe first")
    checks: list[MetricCheck] = Field(default_factory=list)
    duration_s: float = 0.0


class CameraResult(_Step):
    kind: Literal["camera"] = "camera"
    width: int | None = None
    height: int | None = None
    frames_read: int = 0
    frames_wanted: int = 0
    fps: float | None = Field(None, description="timed from the reads, not the driver's claim")
    brightness: float | None = Field(None, description="median mean grey level, 0-255")
    sharpness: float | None = Field(None, description="median Laplacian variance at 640 px width")
    frozen_ratio: float | None = Field(
        None, description="share of consecutive frame pairs that were the same"
    )
    snapshot_jpeg: bytes | None = Field(None, exclude=True, repr=False)


class MicrophoneResult(_Step):
    kind: Literal["microphone"] = "microphone"
    samplerate: int | None = None
    frames: int = 0
    rms_dbfs: float | None = Field(None, description="RMS relative to full scale (a full-scale square is 0)")
    peak_dbfs: float | None = None
    clipping_ratio: float | None = None
    dc_offset: float | None = Field(None, description="mean as a share of full scale, signed")
    silent: bool | None = None
    overflowed: bool | None = None


class SpeakerResult(_Step):
    kind: Literal["speaker"] = "speaker"
    monitor: str | None = Field(None, description="the input that listened to the speaker, if any")
    samplerate: int | None = None
    tone_hz: float | None = None
    played_frames: int = 0
    heard: bool | None = Field(None, description="None when no input could listen")
    heard_s: float | None = None
    detected_hz: float | None = None
    tone_level_dbfs: float | None = None


StepResult = Annotated[CameraResult | MicrophoneResult | SpeakerResult, Field(discriminator="kind")]


class DeviceReport(BaseModel):
    status: Status
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    duration_s: float = 0.0
    camera: CameraResult | None = None
    microphone: MicrophoneResult | None = None
    speaker: SpeakerResult | None = None

    @property
    def steps(self) -> list[CameraResult | MicrophoneResult | SpeakerResult]:
        return [step for step in (self.camera, self.microphone, self.speaker) if step is not None]


def summarise(checks: list[MetricCheck]) -> tuple[Status, list[str]]:
    """Overall status and the reasons of the failing checks, then of the warning ones."""
    status = worst([check.status for check in checks])
    ordered = sorted(checks, key=lambda check: -_RANK[check.status])
    return status, [check.reason for check in ordered if check.status != "ok" and check.reason]
