"""The device checks' helpers: the CLI in a child process (PortAudio reads the ALSA configuration once
per process, so each configuration needs a fresh interpreter)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devices import synthetic

REPO = Path(__file__).resolve().parents[2]


VIDEO_SIZE = (320, 240)


VIDEO_FRAMES = 40


@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str

    def report(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.stdout)
        return parsed


RunCli = Callable[..., CliRun]


MakeAlsa = Callable[..., synthetic.AlsaSetup]
