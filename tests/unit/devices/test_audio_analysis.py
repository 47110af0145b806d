from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.audio_analysis import FLOOR_DBFS, detect_tone, levels, to_dbfs, tone
from devices.synthetic import pcm_samples

RATE = 48_000


def test_full_scale_square_is_zero_dbfs_and_silence_is_the_floor() -> None:
    square = np.where(np.arange(4800) % 2 == 0, 32767, -32768).astype(np.int16)
    assert levels(square, 0.999).rms_dbfs == pytest.approx(0.0, abs=0.001)
    silence = levels(np.zeros(4800, np.int16), 0.999)
    assert silence.rms_dbfs == silence.peak_dbfs == FLOOR_DBFS
    assert to_dbfs(0) == FLOOR_DBFS and to_dbfs(-5) == FLOOR_DBFS


# Up to 2 kHz a sample always lands within 7.5 degrees of the crest, so the peak reads true.
@given(st.floats(min_value=-60, max_value=-3.5), st.floats(min_value=100, max_value=2000))
@settings(max_examples=40, deadline=None, derandomize=True, database=None)
def test_generated_tone_measures_at_its_level(level: float, frequency: float) -> None:
    measured = levels(pcm_samples("tone", 0.5, RATE, level, frequency), 0.999)
    assert measured.rms_dbfs == pytest.approx(level, abs=0.1)
    assert measured.peak_dbfs == pytest.approx(level + 3.01, abs=0.2)
    assert measured.clipping_ratio == 0.0


def test_clipping_and_dc_offset() -> None:
    clipped = levels(pcm_samples("clipped", 0.5, RATE), 0.999)
    assert clipped.clipping_ratio > 0.5
    offset = levels(pcm_samples("dc", 0.5, RATE), 0.999)
    assert offset.dc_offset == pytest.approx(0.25, abs=0.001)
    assert levels(pcm_samples("tone", 0.5, RATE), 0.999).dc_offset == pytest.approx(0.0, abs=0.001)


def _with_silence(samples: np.ndarray, before: float = 0.1, after: float = 0.2) -> np.ndarray:
    pad = [np.zeros(round(s * RATE), np.int16) for s in (before, after)]
    return np.concatenate([pad[0], samples, pad[1]])


@given(st.floats(min_value=300, max_value=6000), st.floats(min_value=-40, max_value=-3))
@settings(max_examples=30, deadline=None, derandomize=True, database=None)
def test_tone_is_found_at_its_frequency_and_level(frequency: float, peak: float) -> None:
    recording = _with_silence(tone(frequency, 0.3, RATE, peak))
    found = detect_tone(recording, RATE, frequency, 60, 0.5, -70)
    assert found.heard_s >= 0.25
    assert found.detected_hz == pytest.approx(frequency, abs=30)
    assert found.level_dbfs == pytest.approx(peak - 3.01, abs=0.5)


@pytest.mark.parametrize(
    "recording",
    [
        np.zeros(RATE // 2, np.int16),
        pcm_samples("tone", 0.5, RATE, -20, 1000),  # a different tone
        pcm_samples("noise", 0.5, RATE, -20),
        _with_silence(tone(1500, 0.3, RATE, -95)),  # the right tone, far too quiet
        np.zeros(100, np.int16),  # shorter than one analysis window
    ],
)
def test_no_tone_is_not_heard(recording: np.ndarray) -> None:
    assert detect_tone(recording, RATE, 1500, 60, 0.5, -70).heard_s == 0.0


def test_tone_fades_in_and_out() -> None:
    samples = tone(1000, 0.1, RATE, -6)
    assert samples.size == 4800
    assert abs(int(samples[0])) <= 1 and abs(int(samples[-1])) <= 1
