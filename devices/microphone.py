"""Microphone check: a fixed number of 48 kHz mono int16 frames, judged by level and shape."""

from __future__ import annotations

import time

from devices import audio_io
from devices.audio_analysis import FLOOR_DBFS, levels
from devices.report import MetricCheck, MicrophoneResult, Status, summarise
from devices.sources import AudioDevice
from devices.thresholds import MicrophoneThresholds


def check_microphone(
    device: AudioDevice | None, thresholds: MicrophoneThresholds | None = None
) -> MicrophoneResult:
    limits = thresholds or MicrophoneThresholds()
    started = time.perf_counter()
    label = None if device is None else str(device)
    try:
        resolved = audio_io.resolve(device, "input")
        label = resolved.name
        samples, overflowed = audio_io.record(
            resolved, limits.samplerate, limits.frames, limits.settle_frames, limits.deadline_s
        )
    except audio_io.AudioDeviceError as error:
        check = MetricCheck(name="open", value=None, status="fail", reason=error.reason)
        return MicrophoneResult(
            device=label,
            status="fail",
            reasons=[error.reason],
            checks=[check],
            duration_s=round(time.perf_counter() - started, 4),
        )

    measured = levels(samples, limits.clip_level)
    silent = measured.rms_dbfs < limits.silence_rms_dbfs or measured.peak_dbfs <= FLOOR_DBFS
    checks = [
        _level_check(measured.rms_dbfs, silent, limits),
        _clipping_check(measured.clipping_ratio, limits),
        _dc_check(measured.dc_offset, limits),
        MetricCheck(
            name="overflow",
            value=float(overflowed),
            status="warn" if overflowed else "ok",
            reason="input overflowed: samples were lost" if overflowed else None,
        ),
    ]
    status, reasons = summarise(checks)
    return MicrophoneResult(
        device=label,
        status=status,
        reasons=reasons,
        checks=checks,
        samplerate=limits.samplerate,
        frames=int(samples.size),
        rms_dbfs=measured.rms_dbfs,
        peak_dbfs=measured.peak_dbfs,
        clipping_ratio=round(measured.clipping_ratio, 6),
        dc_offset=measured.dc_offset,
        silent=silent,
        overflowed=overflowed,
        duration_s=round(time.perf_counter() - started, 4),
    )


def _level_check(rms_dbfs: float, silent: bool, limits: MicrophoneThresholds) -> MetricCheck:
    status: Status = "ok"
    reason = None
    if silent:
        status, reason = "fail", "microphone silent"
    elif rms_dbfs < limits.low_rms_dbfs:
        status, reason = "warn", "input level very low"
    return MetricCheck(name="rms", value=rms_dbfs, unit="dBFS", status=status, reason=reason)


def _clipping_check(ratio: float, limits: MicrophoneThresholds) -> MetricCheck:
    status: Status = "ok"
    reason = None
    if ratio >= limits.clipping_fail:
        status, reason = "fail", "input clipping"
    elif ratio >= limits.clipping_warn:
        status, reason = "warn", "input close to clipping"
    return MetricCheck(
        name="clipping", value=round(ratio, 6), unit="share of samples", status=status, reason=reason
    )


def _dc_check(offset: float, limits: MicrophoneThresholds) -> MetricCheck:
    status: Status = "ok"
    reason = None
    if abs(offset) >= limits.dc_offset_fail:
        status, reason = "fail", "large DC offset: faulty input"
    elif abs(offset) >= limits.dc_offset_warn:
        status, reason = "warn", "DC offset"
    return MetricCheck(
        name="dc_offset", value=offset, unit="share of full scale", status=status, reason=reason
    )
