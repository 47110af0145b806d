"""Loaded by every Python process started with this directory on PYTHONPATH (scripts/bench_call.py
does so for the media children it measures): with ``BENCH_CALL_TAP_DIR`` set, the process logs its
frames (frame_tap.install). The agent's media child has no per-frame output of its own."""

import os

if os.environ.get("BENCH_CALL_TAP_DIR"):
    import frame_tap

    frame_tap.install()
