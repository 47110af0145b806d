"""``telehealth-agent demo``: a whole consultation on the development stack, in one process.

The relay (Access Manager enforced), coturn and the clinic stand-in start in-process; a patient
kiosk, a provider and a specialist, each a real endpoint on its own encrypted ``PubNubBus`` with
real clinic tokens, then run a consultation step by step (``steps.STEPS``): consent, check-in,
two queue updates, join, start, a specialist invited, joining and removed (its revoked token
refused), wrap-up and end with the summary. Each step prints one line: the time since start and
what each agent saw, taken from that agent's own ``EventHub``.

FOR DEVELOPMENT AND NEWCOMERS: nothing here runs in production.

Public API:

- ``DemoOptions`` (``runner``); ``run_demo(options, verbose=False) -> int``: configures logging
  (WARNING unless ``verbose``; on stderr with JSON lines, so stdout stays machine-readable), runs
  the steps with a fresh temporary state directory (removed at exit) and returns the exit code:
  0 passed, 1 a step failed (named on stderr) or SIGTERM stopped it. SIGTERM, like Ctrl-C
  (KeyboardInterrupt, for the caller), first stops everything the demo started: coturn is a
  child process and would otherwise outlive it.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from telehealth_client import logs
from telehealth_devstack.demo.runner import DemoOptions, run_steps

__all__ = ["DemoOptions", "run_demo"]


def run_demo(options: DemoOptions, *, verbose: bool = False) -> int:
    logs.configure("INFO" if verbose else "WARNING", "kv")
    if options.json_lines:
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.stderr)
    state_dir = Path(tempfile.mkdtemp(prefix="telehealth-demo-"))
    try:
        return asyncio.run(_until_terminated(options, state_dir))
    except asyncio.CancelledError:
        print("telehealth-agent: demo: stopped by SIGTERM", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


async def _until_terminated(options: DemoOptions, state_dir: Path) -> int:
    """The steps; SIGTERM cancels them, so their cleanup runs (asyncio.run raises CancelledError)."""
    loop = asyncio.get_running_loop()
    steps = asyncio.current_task()
    assert steps is not None
    loop.add_signal_handler(signal.SIGTERM, steps.cancel)
    try:
        return await run_steps(options, state_dir)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
