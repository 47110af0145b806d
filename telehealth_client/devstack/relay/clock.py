"""Time for the relay: an injectable wall clock and strictly increasing timetokens."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds since the epoch, like ``time.time``."""


class ManualClock:
    """A clock that moves only when told to, so tests expire tokens and presence without sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds


class Timetokens:
    """PubNub timetokens (100 ns units since the epoch), each one larger than the one before.

    Every timetoken the relay hands out, including the ones in empty subscribe answers, comes
    from here: a subscriber that resumes from any of them can then never miss a later message
    that got the same clock tick.
    """

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, time.time_ns() // 100)
        return self._last

    def observe(self, timetoken: int) -> None:
        """Never hand out ``timetoken`` or an earlier one (one kept from an earlier run)."""
        self._last = max(self._last, timetoken)

    @property
    def last(self) -> int:
        return self._last
