"""The benchmark's frame tap (``scripts/bench_call_tap``) as the media and browser tests use it.

``frame_tap()``: the tap module itself (the one layout of numbered blocks the media children draw
and read, and the reader of its logs). ``tap_env(directory, side)``: what a media child needs in its
environment to load the tap (its ``sitecustomize``) and log each frame its camera sends and each
remote frame it shows to ``directory/<side>-<pid>.tap``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from types import ModuleType

TAP_DIR = Path(__file__).resolve().parents[2] / "scripts" / "bench_call_tap"


@functools.cache
def frame_tap() -> ModuleType:
    """``scripts/bench_call_tap/frame_tap.py``, loaded once (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location("frame_tap", TAP_DIR / "frame_tap.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tap_env(directory: Path, side: str) -> dict[str, str]:
    """The settings that make a media child log its frames into ``directory`` as ``side``: the
    tap's folder first on this process's ``PYTHONPATH``."""
    python_path = os.pathsep.join(p for p in (str(TAP_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": python_path, "BENCH_CALL_TAP_DIR": str(directory), "BENCH_CALL_TAP_SIDE": side}
