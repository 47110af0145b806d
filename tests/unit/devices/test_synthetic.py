from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from devices import synthetic


def test_video_kinds_have_their_defects() -> None:
    normal = synthetic.video_frames("normal", 3, 64, 48)
    assert len(normal) == 3 and normal[0].shape == (48, 64, 3)
    assert not np.array_equal(normal[0], normal[1])
    frozen = synthetic.video_frames("frozen", 8, 64, 48, frozen_after=3)
    assert all(np.array_equal(frozen[2], later) for later in frozen[3:])
    assert len(synthetic.video_frames("short", 30, 64, 48)) == synthetic.SHORT_VIDEO_FRAMES
    assert synthetic.video_frames("dark", 1, 64, 48)[0].mean() < 20


def test_lossless_video_reads_back_exactly(tmp_path: Path) -> None:
    import cv2

    path = synthetic.write_video(tmp_path / "v.mkv", "normal", 3, 64, 48)
    capture = cv2.VideoCapture(str(path))
    ok, first = capture.read()
    capture.release()
    assert ok and np.array_equal(first, synthetic.video_frames("normal", 1, 64, 48)[0])


def test_pcm_file_is_raw_s16le_mono_at_the_rate(tmp_path: Path) -> None:
    path = synthetic.write_pcm(tmp_path / "t.raw", "tone", seconds=0.5, level_dbfs=-20)
    data = np.fromfile(path, "<i2")
    assert data.size == 24_000
    assert np.array_equal(data, synthetic.pcm_samples("tone", 0.5, 48_000, -20))


def test_alsa_config_defines_every_device_and_a_default(tmp_path: Path) -> None:
    pcm = synthetic.write_pcm(tmp_path / "t.raw", "silence", seconds=0.1)
    setup = synthetic.write_alsa_config(tmp_path / "alsa", pcm)
    text = setup.config.read_text()
    for name in (synthetic.MICROPHONE, synthetic.SPEAKER, synthetic.MONITOR, "default", "null"):
        assert f"pcm.{name} " in text
    assert f'infile "{pcm.resolve()}"' in text
    assert setup.played is not None and setup.played.exists()
    assert setup.env == {"ALSA_CONFIG_PATH": str(setup.config)}


def test_alsa_config_without_devices_still_has_a_default(tmp_path: Path) -> None:
    setup = synthetic.write_alsa_config(tmp_path, None, speaker=False)
    assert (setup.microphone, setup.speaker, setup.monitor) == (None, None, None)
    assert "pcm.default { type hw; card 31 }" in setup.config.read_text()


def test_alsa_config_refuses_paths_it_cannot_quote(tmp_path: Path) -> None:
    odd = tmp_path / 'a"b.raw'
    odd.write_bytes(b"")
    with pytest.raises(ValueError, match="not usable in an ALSA configuration"):
        synthetic.write_alsa_config(tmp_path / "alsa", odd)
