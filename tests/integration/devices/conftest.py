"""Fixtures for the device checks through real OpenCV and real PortAudio.

Audio checks run in a child process: PortAudio reads the ALSA configuration
once per process, so each configuration needs a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from devices import synthetic
from tests.support.devices import REPO, VIDEO_FRAMES, VIDEO_SIZE, CliRun, MakeAlsa, RunCli


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One lossless video of each kind, made once per session."""
    folder = tmp_path_factory.mktemp("videos")
    width, height = VIDEO_SIZE
    return {
        kind: synthetic.write_video(folder / f"{kind}.mkv", kind, VIDEO_FRAMES, width, height)
        for kind in synthetic.VIDEO_KINDS
    }


@pytest.fixture
def run_cli() -> RunCli:
    """``python -m devices.cli ARGS`` in a child process, with an optional ALSA setup."""

    def run(*args: str, alsa: synthetic.AlsaSetup | None = None, prefix: Sequence[str] = ()) -> CliRun:
        env = dict(os.environ)
        env.pop("ALSA_CONFIG_PATH", None)
        if alsa is not None:
            env.update(alsa.env)
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "devices.cli", *args],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return CliRun(done.returncode, done.stdout, done.stderr)

    return run


@pytest.fixture
def make_alsa(tmp_path: Path) -> MakeAlsa:
    """An ALSA configuration whose microphone replays a generated PCM file (or has none)."""

    def make(
        pcm: synthetic.PcmKind | None = "tone",
        speaker: bool = True,
        loopback: bool = True,
        level_dbfs: float = -20.0,
    ) -> synthetic.AlsaSetup:
        capture = None
        if pcm is not None:
            capture = synthetic.write_pcm(tmp_path / f"{pcm}.raw", pcm, level_dbfs=level_dbfs)
        return synthetic.write_alsa_config(tmp_path / "alsa", capture, speaker=speaker, loopback=loopback)

    return make
