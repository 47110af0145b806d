"""Speaker check: play a short tone; where an input can hear the output, find the tone in it."""

from __future__ import annotations

import time

import numpy as np

from devices import audio_io
from devices.audio_analysis import detect_tone, tone
from devices.report import MetricCheck, SpeakerResult, summarise
from devices.sources import AudioDevice
from devices.thresholds import SpeakerThresholds


def check_speaker(
    device: AudioDevice | None,
    monitor: AudioDevice | None = None,
    thresholds: SpeakerThresholds | None = None,
) -> SpeakerResult:
    """``monitor`` is an input that hears this speaker (a loopback or duplex device, or a
    microphone in the same room); without one the tone is played but cannot be confirmed."""
    limits = thresholds or SpeakerThresholds()
    started = time.perf_counter()
    rate = limits.samplerate
    lead = np.zeros(round(limits.lead_s * rate), np.int16)
    tail = np.zeros(round(limits.tail_s * rate), np.int16)
    signal = np.concatenate([lead, tone(limits.tone_hz, limits.tone_s, rate, limits.tone_dbfs), tail])
    result = SpeakerResult(
        device=None if device is None else str(device),
        monitor=None if monitor is None else str(monitor),
        status="ok",
        samplerate=rate,
        tone_hz=limits.tone_hz,
    )
    try:
        speaker = audio_io.resolve(device, "output")
        result.device = speaker.name
        listener = None
        if monitor is not None:
            listener = audio_io.resolve(monitor, "input")
            result.monitor = listener.name
        recording = audio_io.play(
            speaker, listener, signal, rate, prime=lead.size, deadline_s=limits.deadline_s
        )
    except audio_io.AudioDeviceError as error:
        result.status, result.reasons = "fail", [error.reason]
        result.checks = [MetricCheck(name="open", value=None, status="fail", reason=error.reason)]
        result.duration_s = round(time.perf_counter() - started, 4)
        return result

    result.played_frames = int(signal.size)
    if recording is None:
        note = "tone played; not confirmed: no input listens to this speaker"
        result.checks = [MetricCheck(name="played", value=limits.tone_s, unit="s", status="ok", reason=note)]
        result.reasons = [note]
    else:
        found = detect_tone(
            recording,
            rate,
            limits.tone_hz,
            limits.frequency_tolerance_hz,
            limits.min_tone_ratio,
            limits.min_tone_dbfs,
        )
        result.heard = found.heard_s >= limits.min_heard_share * limits.tone_s
        result.heard_s, result.detected_hz, result.tone_level_dbfs = (
            found.heard_s,
            found.detected_hz,
            found.level_dbfs,
        )
        result.checks = [
            MetricCheck(
                name="heard",
                value=found.heard_s,
                unit="s",
                status="ok" if result.heard else "fail",
                reason=None if result.heard else f"speaker tone not heard on {result.monitor}",
            )
        ]
        result.status, result.reasons = summarise(result.checks)
    result.duration_s = round(time.perf_counter() - started, 4)
    return result
