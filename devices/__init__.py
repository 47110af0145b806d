"""Hardware checks for the kiosk: camera, microphone and speaker. No PubNub, no aiortc.

Importing this package loads neither OpenCV nor PortAudio; the checks load
them in a worker thread on first use.
"""

from devices.check import OnStep, run_device_check
from devices.listing import AudioDeviceInfo, CameraInfo, DeviceList, list_devices
from devices.report import (
    CameraResult,
    DeviceKind,
    DeviceReport,
    MetricCheck,
    MicrophoneResult,
    SpeakerResult,
    Status,
    StepResult,
)
from devices.sources import DeviceUsageError
from devices.thresholds import CameraThresholds, DeviceThresholds, MicrophoneThresholds, SpeakerThresholds

__all__ = [
    "AudioDeviceInfo",
    "CameraInfo",
    "CameraResult",
    "CameraThresholds",
    "DeviceKind",
    "DeviceList",
    "DeviceReport",
    "DeviceThresholds",
    "DeviceUsageError",
    "MetricCheck",
    "MicrophoneResult",
    "MicrophoneThresholds",
    "OnStep",
    "SpeakerResult",
    "SpeakerThresholds",
    "Status",
    "StepResult",
    "list_devices",
    "run_device_check",
]
