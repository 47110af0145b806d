"""What devices are present: cameras (``/dev/video*``) and PortAudio inputs and outputs, by name."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, Field

_VIDEO_NODE = re.compile(r"video([0-9]+)")


class CameraInfo(BaseModel):
    path: str
    index: int
    name: str | None = Field(None, description="the driver's name for the device, from sysfs")


class AudioDeviceInfo(BaseModel):
    index: int
    name: str
    hostapi: str
    input_channels: int
    output_channels: int
    default_samplerate: float
    is_default_input: bool = False
    is_default_output: bool = False


class DeviceList(BaseModel):
    cameras: list[CameraInfo] = Field(default_factory=list)
    inputs: list[AudioDeviceInfo] = Field(default_factory=list)
    outputs: list[AudioDeviceInfo] = Field(default_factory=list)
    audio_error: str | None = Field(None, description="why audio devices could not be listed")


def list_cameras(dev: Path = Path("/dev"), sysfs: Path = Path("/sys/class/video4linux")) -> list[CameraInfo]:
    """Video nodes in index order. A camera often has a second node for metadata; both are listed."""
    found: list[CameraInfo] = []
    try:
        entries = list(dev.iterdir())
    except OSError:
        return found
    for entry in entries:
        match = _VIDEO_NODE.fullmatch(entry.name)
        if match is None:
            continue
        try:
            name: str | None = (sysfs / entry.name / "name").read_text().strip() or None
        except OSError:
            name = None
        found.append(CameraInfo(path=str(entry), index=int(match.group(1)), name=name))
    return sorted(found, key=lambda camera: camera.index)


def list_audio() -> tuple[list[AudioDeviceInfo], list[AudioDeviceInfo], str | None]:
    """PortAudio's inputs and outputs as the process first saw them (PortAudio enumerates once)."""
    # Here, not at the top: audio_io loads numpy, and this package is imported by the agent's
    # settings and API, which must not carry numpy until a device is listed or checked.
    from devices import audio_io

    try:
        sd = audio_io.sounddevice()
        devices = list(sd.query_devices())
        hostapis = list(sd.query_hostapis())
        default_in, default_out = (int(i) for i in sd.default.device)
    except audio_io.AudioDeviceError as error:
        return [], [], error.reason
    infos = [
        AudioDeviceInfo(
            index=int(info["index"]),
            name=str(info["name"]),
            hostapi=str(hostapis[int(info["hostapi"])]["name"]),
            input_channels=int(info["max_input_channels"]),
            output_channels=int(info["max_output_channels"]),
            default_samplerate=float(info["default_samplerate"]),
            is_default_input=int(info["index"]) == default_in,
            is_default_output=int(info["index"]) == default_out,
        )
        for info in devices
    ]
    return (
        [info for info in infos if info.input_channels > 0],
        [info for info in infos if info.output_channels > 0],
        None,
    )


def list_devices() -> DeviceList:
    """Blocking (the first call loads PortAudio): call it through ``asyncio.to_thread`` from async code."""
    inputs, outputs, error = list_audio()
    return DeviceList(cameras=list_cameras(), inputs=inputs, outputs=outputs, audio_error=error)
