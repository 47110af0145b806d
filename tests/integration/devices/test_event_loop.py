"""A full device check leaves the event loop free: a 10 ms ticker keeps ticking throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devices import synthetic
from tests.support.devices import REPO, MakeAlsa

pytestmark = pytest.mark.integration

PROBE = Path(__file__).with_name("loop_probe.py")
FRAMES = 300


def test_full_check_does_not_block_the_event_loop(tmp_path: Path, make_alsa: MakeAlsa) -> None:
    video = synthetic.write_video(tmp_path / "long.mkv", "normal", FRAMES, 320, 240)
    alsa = make_alsa("tone")
    args = [str(video), synthetic.MICROPHONE, synthetic.SPEAKER, synthetic.MONITOR, str(FRAMES)]
    done = subprocess.run(
        [sys.executable, str(PROBE), *args],
        cwd=REPO,
        env={**os.environ, **alsa.env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    probe = json.loads(done.stdout)
    assert probe["status"] == "ok"
    assert probe["camera_frames"] == FRAMES
    # The check must last long enough for a blocked loop to show (OpenCV's import and
    # 300 decoded frames). A blocked loop shows as one pause about as long as the work
    # it blocked on; the bounds are loose so a busy machine's scheduling cannot fail them.
    assert probe["check_s"] > 0.3
    assert probe["max_gap_s"] < probe["check_s"] / 2
    assert probe["ticks"] >= 10
