"""Pure measurements of int16 audio: levels in dBFS, clipping, DC offset, tone detection.

dBFS here is relative to full scale (32768): a full-scale square wave is 0 dBFS
RMS and a full-scale sine is -3.01 dBFS RMS, 0 dBFS peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

FULL_SCALE = 32768.0
FLOOR_DBFS = -120.0  # stands for digital silence; JSON has no -inf

Samples = NDArray[np.int16]


def to_dbfs(amplitude: float) -> float:
    """Amplitude in int16 units to dBFS, floored so silence stays a finite number."""
    if amplitude <= 0:
        return FLOOR_DBFS
    return max(FLOOR_DBFS, 20.0 * math.log10(amplitude / FULL_SCALE))


@dataclass(frozen=True)
class Levels:
    rms_dbfs: float
    peak_dbfs: float
    clipping_ratio: float
    dc_offset: float


def levels(samples: Samples, clip_level: float) -> Levels:
    if samples.size == 0:
        return Levels(FLOOR_DBFS, FLOOR_DBFS, 0.0, 0.0)
    wide = samples.astype(np.float64).ravel()
    rms = math.sqrt(float(np.mean(wide * wide)))
    peak = float(np.max(np.abs(wide)))
    # Either rail counts: int16 is asymmetric, so compare magnitudes against the positive rail.
    clipped = int(np.count_nonzero(np.abs(wide) >= clip_level * (FULL_SCALE - 1)))
    return Levels(
        rms_dbfs=round(to_dbfs(rms), 3),
        peak_dbfs=round(to_dbfs(peak), 3),
        clipping_ratio=clipped / wide.size,
        dc_offset=round(float(np.mean(wide)) / FULL_SCALE, 6),
    )


def tone(frequency_hz: float, seconds: float, samplerate: int, peak_dbfs: float) -> Samples:
    """A sine at the given peak level, with 5 ms fades so the start and end do not click."""
    count = round(seconds * samplerate)
    amplitude = (FULL_SCALE - 1) * 10 ** (peak_dbfs / 20)
    wave = amplitude * np.sin(2 * np.pi * frequency_hz * np.arange(count) / samplerate)
    fade = min(count // 2, round(0.005 * samplerate))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        wave[:fade] *= ramp
        wave[count - fade :] *= ramp[::-1]
    return np.round(wave).astype(np.int16)


@dataclass(frozen=True)
class ToneDetection:
    heard_s: float  # how long the tone was present in the recording
    detected_hz: float | None  # strongest frequency of the window most dominated by the tone
    level_dbfs: float  # RMS of the tone band in its loudest window


_WINDOW = 2048


def detect_tone(
    samples: Samples,
    samplerate: int,
    frequency_hz: float,
    tolerance_hz: float,
    min_ratio: float,
    min_dbfs: float,
) -> ToneDetection:
    """Slide a Hann window over the recording; a window hears the tone when most of its
    energy sits within the tolerance of the tone frequency and that band is loud enough."""
    signal = samples.astype(np.float64).ravel() / FULL_SCALE
    if signal.size < _WINDOW:
        return ToneDetection(0.0, None, FLOOR_DBFS)
    hop = _WINDOW // 2
    window = np.hanning(_WINDOW)
    # Power of a sine of amplitude A through a Hann window sums to A^2 * sum(w^2) / 2 over its bins.
    norm = float(np.sum(window * window))
    freqs = np.fft.rfftfreq(_WINDOW, 1 / samplerate)
    band = np.abs(freqs - frequency_hz) <= tolerance_hz
    starts = range(0, signal.size - _WINDOW + 1, hop)
    frames = np.stack([signal[s : s + _WINDOW] for s in starts]) * window
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    power[:, 1:-1] *= 2  # one-sided spectrum
    total = power.sum(axis=1)
    band_power = power[:, band].sum(axis=1)
    ratio = np.divide(band_power, total, out=np.zeros_like(total), where=total > 0)
    band_rms = np.sqrt(band_power / (norm * _WINDOW))
    band_dbfs = np.array([to_dbfs(r * FULL_SCALE) for r in band_rms])
    hearing = (ratio >= min_ratio) & (band_dbfs >= min_dbfs)
    if not hearing.any():
        return ToneDetection(0.0, None, round(float(band_dbfs.max()), 3))
    best = int(np.argmax(np.where(hearing, band_power, -1.0)))
    return ToneDetection(
        heard_s=round(int(hearing.sum()) * hop / samplerate, 4),
        detected_hz=round(float(freqs[int(np.argmax(power[best]))]), 1),
        level_dbfs=round(float(band_dbfs[best]), 3),
    )
