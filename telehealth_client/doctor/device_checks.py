"""Check 6: the camera and the microphone, as ``check-devices`` checks them (the settings' devices
and thresholds), each its own line. The speaker is left out: its check plays a tone, which a
doctor run on a kiosk in use must not."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from telehealth_client.config import Settings
from telehealth_client.doctor.report import Result, failed

if TYPE_CHECKING:
    from devices.report import CameraResult, DeviceKind, MicrophoneResult

Kind = Literal["camera", "microphone"]
FIX = "check the {kind} setting and the cable; telehealth-agent check-devices --list lists the devices"


async def check_device(kind: Kind, settings: Settings) -> Result:
    """The one device ``kind`` of the settings checked (in threads: ``run_device_check``)."""
    from devices.check import run_device_check  # OpenCV and PortAudio: only when checked

    others: tuple[DeviceKind, ...] = ("microphone", "speaker") if kind == "camera" else ("camera", "speaker")
    report = await run_device_check(
        settings.camera, settings.microphone, None, settings.device_thresholds, skip=others
    )
    step = report.camera if kind == "camera" else report.microphone
    if step is None:
        return failed(kind, "the device check gave no result")
    return judged(step)


def measured(step: CameraResult | MicrophoneResult) -> str:
    """The numbers a technician reads: the picture's size and rate, or the sound's level."""
    if step.kind == "camera" and step.width is not None:
        fps = f" at {step.fps:.0f} fps" if step.fps is not None else ""
        return f"{step.width}x{step.height}{fps}"
    if step.kind == "microphone" and step.rms_dbfs is not None:
        return f"level {step.rms_dbfs:.0f} dBFS"
    return "nothing measured"


def judged(step: CameraResult | MicrophoneResult) -> Result:
    device = step.device or "no device"
    if step.status == "ok":
        return Result(step.kind, "pass", f"{device}: {measured(step)}")
    if step.status == "warn":
        return Result(step.kind, "warn", f"{device}: {measured(step)}", tuple(step.reasons))
    return Result(step.kind, "fail", f"{device}: {FIX.format(kind=step.kind)}", tuple(step.reasons))
