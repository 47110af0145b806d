"""The async entry point: camera, microphone and speaker checks to one report.

All device work runs in worker threads. The camera runs alongside the audio
checks; the microphone and speaker run one after the other so the tone is
never in the microphone's recording.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import TypeVar

from devices.report import (
    DEVICE_KINDS,
    CameraResult,
    DeviceKind,
    DeviceReport,
    MetricCheck,
    MicrophoneResult,
    SpeakerResult,
    StepResult,
    worst,
)
from devices.sources import (
    AudioDevice,
    CameraSource,
    DeviceUsageError,
    parse_audio_device,
    parse_camera_source,
)
from devices.thresholds import CameraThresholds, DeviceThresholds, MicrophoneThresholds, SpeakerThresholds

log = logging.getLogger(__name__)

# On top of a check's own deadline: the first check in a process also imports OpenCV or loads PortAudio.
_GRACE_S = 5.0

# One check per device at a time, even across overlapping calls: a second open of a camera
# fails as "busy". Taken in the worker thread, so waiting for it never blocks the event loop.
_DEVICE_LOCKS: dict[str, threading.Lock] = {"camera": threading.Lock(), "audio": threading.Lock()}

OnStep = Callable[[StepResult], None]
_Result = TypeVar("_Result", CameraResult, MicrophoneResult, SpeakerResult)


async def run_device_check(
    camera: str | None = None,
    microphone: str | None = None,
    speaker: str | None = None,
    thresholds: DeviceThresholds | None = None,
    on_step: OnStep | None = None,
    *,
    speaker_monitor: str | None = None,
    skip: Collection[DeviceKind] = (),
) -> DeviceReport:
    """Check the devices and report. ``None`` picks the system default device (the first
    ``/dev/video*`` for the camera); ``skip`` leaves devices out. ``on_step`` is called on the
    event loop with each device's result as soon as it is known.

    Raises DeviceUsageError for malformed arguments; everything about the devices themselves,
    missing ones included, is a verdict in the report.
    """
    limits = thresholds or DeviceThresholds()
    unknown = set(skip) - set(DEVICE_KINDS)
    if unknown:
        raise DeviceUsageError("skip", f"unknown device kind {sorted(unknown)[0]!r}")
    if set(skip) >= set(DEVICE_KINDS):
        raise DeviceUsageError("skip", "every device is skipped: nothing to check")
    camera_source = parse_camera_source(camera) if camera is not None else None
    mic = parse_audio_device(microphone, "microphone") if microphone is not None else None
    out = parse_audio_device(speaker, "speaker") if speaker is not None else None
    monitor = parse_audio_device(speaker_monitor, "speaker_monitor") if speaker_monitor is not None else None

    started = time.perf_counter()
    report = DeviceReport(status="ok")

    def publish(result: _Result) -> _Result:
        if on_step is not None:
            try:
                on_step(result)
            except Exception:  # a broken listener must not cost the patient the check
                log.exception("device check listener failed device_kind=%s", result.kind)
        return result

    async def camera_step() -> None:
        result = await _step(_camera, (camera_source, limits.camera), limits.camera.deadline_s, CameraResult)
        report.camera = publish(result)

    async def audio_steps() -> None:
        if "microphone" not in skip:
            result = await _step(
                _microphone, (mic, limits.microphone), limits.microphone.deadline_s, MicrophoneResult
            )
            report.microphone = publish(result)
        if "speaker" not in skip:
            result_s = await _step(
                _speaker, (out, monitor, limits.speaker), limits.speaker.deadline_s, SpeakerResult
            )
            report.speaker = publish(result_s)

    async with asyncio.TaskGroup() as group:
        if "camera" not in skip:
            group.create_task(camera_step())
        if {"microphone", "speaker"} - set(skip):
            group.create_task(audio_steps())

    report.status = worst([step.status for step in report.steps])
    report.duration_s = round(time.perf_counter() - started, 4)
    return report


async def _step(
    work: Callable[..., _Result], args: tuple[object, ...], deadline_s: float, kind: type[_Result]
) -> _Result:
    """Run one blocking check in a thread; a hang or a bug becomes a failing verdict."""
    noun = kind.model_fields["kind"].default
    started = time.perf_counter()
    try:
        return await asyncio.wait_for(asyncio.to_thread(work, *args), deadline_s + _GRACE_S)
    except TimeoutError:
        # The thread cannot be stopped; it ends when the driver gives up. The verdict need not wait.
        reason = f"{noun} did not answer within {deadline_s + _GRACE_S:g} s"
    except Exception as error:
        log.exception("device check failed unexpectedly device_kind=%s", noun)
        reason = f"{noun} check error: {error.__class__.__name__}"
    return kind(
        device=None,
        status="fail",
        reasons=[reason],
        checks=[MetricCheck(name="open", value=None, status="fail", reason=reason)],
        duration_s=round(time.perf_counter() - started, 4),
    )


# The workers import their modules on first use, in the worker thread: importing OpenCV takes
# about half a second and importing sounddevice probes every ALSA device.


def _camera(source: CameraSource | None, limits: CameraThresholds) -> CameraResult:
    from devices.camera import check_camera, default_camera

    with _DEVICE_LOCKS["camera"]:
        chosen = source if source is not None else default_camera()
        if chosen is not None:
            return check_camera(chosen, limits)
    reason = "camera not found: no /dev/video* device"
    return CameraResult(
        device=None,
        status="fail",
        reasons=[reason],
        checks=[MetricCheck(name="open", value=None, status="fail", reason=reason)],
        frames_wanted=limits.frames,
    )


def _microphone(device: AudioDevice | None, limits: MicrophoneThresholds) -> MicrophoneResult:
    from devices.microphone import check_microphone

    with _DEVICE_LOCKS["audio"]:
        return check_microphone(device, limits)


def _speaker(
    device: AudioDevice | None, monitor: AudioDevice | None, limits: SpeakerThresholds
) -> SpeakerResult:
    from devices.speaker import check_speaker

    with _DEVICE_LOCKS["audio"]:
        return check_speaker(device, monitor, limits)
