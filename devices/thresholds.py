"""Pass/warn/fail limits for the device checks, as settings-friendly pydantic models.

Defaults are chosen for a kiosk in a lit room with a 30 fps webcam and a USB
microphone; every limit can be overridden from the agent's settings.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class _Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CameraThresholds(_Limits):
    frames: int = Field(30, ge=2, le=600, description="frames to read (fixed count, never 'for N seconds')")
    deadline_s: float = Field(3.0, gt=0, le=60, description="open plus read must finish within this")
    min_fps_warn: float = Field(15.0, ge=0)
    min_fps_fail: float = Field(5.0, ge=0)
    dark_warn: float = Field(60.0, ge=0, le=255, description="mean grey level (0-255) below which: warn")
    dark_fail: float = Field(35.0, ge=0, le=255)
    bright_warn: float = Field(215.0, ge=0, le=255)
    bright_fail: float = Field(245.0, ge=0, le=255)
    sharpness_warn: float = Field(60.0, ge=0, description="Laplacian variance at 640 px width")
    sharpness_fail: float = Field(20.0, ge=0)
    frozen_diff: float = Field(
        0.05, ge=0, description="mean abs grey difference at or below which two frames are the same"
    )
    frozen_warn: float = Field(
        0.2, ge=0, le=1, description="share of consecutive frame pairs that are the same"
    )
    frozen_fail: float = Field(0.5, ge=0, le=1)
    snapshot_width: int = Field(320, ge=16, le=1920, description="width of the JPEG preview")

    @model_validator(mode="after")
    def _ordered(self) -> CameraThresholds:
        _require(self.min_fps_fail <= self.min_fps_warn, "min_fps_fail must be <= min_fps_warn")
        _require(self.dark_fail <= self.dark_warn, "dark_fail must be <= dark_warn")
        _require(self.bright_warn <= self.bright_fail, "bright_warn must be <= bright_fail")
        _require(self.sharpness_fail <= self.sharpness_warn, "sharpness_fail must be <= sharpness_warn")
        _require(self.frozen_warn <= self.frozen_fail, "frozen_warn must be <= frozen_fail")
        return self


class MicrophoneThresholds(_Limits):
    samplerate: int = Field(48_000, ge=8_000, le=192_000)
    frames: int = Field(24_000, ge=1_024, description="frames analysed (mono int16)")
    settle_frames: int = Field(2_400, ge=0, description="frames read and dropped first: start-up transients")
    deadline_s: float = Field(3.0, gt=0, le=60)
    # Digital silence means a dead or muted input; a quiet room is far above this.
    silence_rms_dbfs: float = Field(-90.0, le=0)
    low_rms_dbfs: float = Field(-70.0, le=0)
    clip_level: float = Field(0.999, gt=0, le=1, description="share of full scale counted as clipped")
    clipping_warn: float = Field(0.001, ge=0, le=1, description="share of samples clipped")
    clipping_fail: float = Field(0.01, ge=0, le=1)
    dc_offset_warn: float = Field(0.02, ge=0, le=1, description="mean as a share of full scale")
    dc_offset_fail: float = Field(0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> MicrophoneThresholds:
        _require(self.silence_rms_dbfs <= self.low_rms_dbfs, "silence_rms_dbfs must be <= low_rms_dbfs")
        _require(self.clipping_warn <= self.clipping_fail, "clipping_warn must be <= clipping_fail")
        _require(self.dc_offset_warn <= self.dc_offset_fail, "dc_offset_warn must be <= dc_offset_fail")
        return self


class SpeakerThresholds(_Limits):
    samplerate: int = Field(48_000, ge=8_000, le=192_000)
    tone_hz: float = Field(1_500.0, ge=100, le=8_000, description="unlike the usual 1 kHz test tone")
    tone_dbfs: float = Field(-12.0, le=0, description="peak level of the played tone")
    tone_s: float = Field(0.3, gt=0, le=5)
    lead_s: float = Field(0.1, ge=0, le=2, description="silence before the tone: output and input latency")
    tail_s: float = Field(0.2, ge=0, le=2, description="silence after the tone, still recorded")
    deadline_s: float = Field(3.0, gt=0, le=60)
    frequency_tolerance_hz: float = Field(60.0, gt=0)
    min_tone_ratio: float = Field(0.5, gt=0, le=1, description="share of a window's energy at the tone")
    min_tone_dbfs: float = Field(-70.0, le=0, description="quieter than this is not heard")
    min_heard_share: float = Field(
        0.5, gt=0, le=1, description="share of the tone's length that must be heard"
    )


class DeviceThresholds(_Limits):
    camera: CameraThresholds = Field(default_factory=CameraThresholds)
    microphone: MicrophoneThresholds = Field(default_factory=MicrophoneThresholds)
    speaker: SpeakerThresholds = Field(default_factory=SpeakerThresholds)
