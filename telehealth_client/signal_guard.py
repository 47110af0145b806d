"""SIGTERM and SIGINT outside the event loop's handler (``agent.run_until_signalled``).

Before it, importing the agent takes a second or two on a kiosk, and systemd may stop the service
in that time; after it, the process still flushes its logs. Python's default would end the process
with 143 and no word. This handler notes the first signal, so that ``run`` stops before it starts
(exit 0), and exits at once on a second (1), as the loop's handler does. Standard library only: it
is installed before anything heavy is imported. Commands other than ``run`` get the defaults back
(``release``).
"""

from __future__ import annotations

import os
import signal
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_seen: list[int] = []


def _note(signum: int, frame: FrameType | None) -> None:
    if _seen:
        os._exit(1)  # the second: the operator insists
    _seen.append(signum)


def install(already: int | None = None) -> None:
    """Note the first signal from now on instead of dying of it; ``already``: one that came
    before (the loop's handler saw it), so that the next exits at once."""
    if already is not None and not _seen:
        _seen.append(already)
    for signum in SIGNALS:
        signal.signal(signum, _note)


def first() -> signal.Signals | None:
    """The first signal received since ``install``, if any."""
    return signal.Signals(_seen[0]) if _seen else None


def release() -> None:
    """Python's defaults back; a signal noted meanwhile is delivered again, to take its usual effect."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if _seen:
        signal.raise_signal(_seen.pop())
