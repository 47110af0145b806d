from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from devices.thresholds import CameraThresholds, DeviceThresholds, MicrophoneThresholds, SpeakerThresholds


def test_defaults_are_consistent_and_round_trip_through_json() -> None:
    limits = DeviceThresholds()
    assert limits.camera.frames == 30 and limits.microphone.samplerate == 48_000
    assert DeviceThresholds.model_validate_json(limits.model_dump_json()) == limits


def test_embeds_in_settings_with_partial_overrides() -> None:
    class Settings(BaseModel):
        devices: DeviceThresholds = DeviceThresholds()

    settings = Settings.model_validate({"devices": {"camera": {"frames": 60}, "speaker": {"tone_hz": 2000}}})
    assert settings.devices.camera.frames == 60
    assert settings.devices.camera.dark_fail == CameraThresholds().dark_fail
    assert settings.devices.speaker.tone_hz == 2000


@pytest.mark.parametrize(
    ("model", "values", "message"),
    [
        (CameraThresholds, {"dark_fail": 90}, "dark_fail must be <= dark_warn"),
        (CameraThresholds, {"frames": 1}, "greater than or equal to 2"),
        (CameraThresholds, {"fps": 30}, "Extra inputs are not permitted"),
        (MicrophoneThresholds, {"clipping_fail": 0.0001}, "clipping_warn must be <= clipping_fail"),
        (MicrophoneThresholds, {"silence_rms_dbfs": 3}, "less than or equal to 0"),
        (SpeakerThresholds, {"tone_s": 0}, "greater than 0"),
    ],
)
def test_bad_values_are_rejected_with_the_reason(
    model: type[BaseModel], values: dict[str, float], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        model.model_validate(values)
