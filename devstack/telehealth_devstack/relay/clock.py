"""Time for the relay: an injectable wall clock, alarms on it, and strictly increasing timetokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]
"""Seconds since the epoch, like ``time.time``."""

Cancel = Callable[[], None]
"""Calling it cancels an alarm (harmless once it has gone off)."""


@dataclass(eq=False, slots=True)
class _ManualAlarm:
    when: float
    callback: Callable[[], None]
    loop: asyncio.AbstractEventLoop


class ManualClock:
    """A clock that moves only when told to, so tests expire tokens and presence without sleeping.

    Alarms set on it (``alarm``) go off inside ``advance`` once it reaches their time.
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._alarms: set[_ManualAlarm] = set()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds
        due = sorted((a for a in self._alarms if a.when <= self._now), key=lambda a: a.when)
        for ringing in due:
            if ringing in self._alarms:  # an earlier callback may have cancelled it
                self._alarms.discard(ringing)
                _call_on(ringing.loop, ringing.callback)

    def at(self, when: float, callback: Callable[[], None]) -> Cancel:
        """Call ``callback`` on the running loop when ``advance`` reaches ``when``."""
        pending = _ManualAlarm(when, callback, asyncio.get_running_loop())
        self._alarms.add(pending)
        return lambda: self._alarms.discard(pending)


class _LoopAlarm:
    """An alarm on a clock that moves by itself: a loop timer, set again if it fired early (the
    wall clock and the loop's monotonic clock can drift apart)."""

    def __init__(self, clock: Clock, when: float, callback: Callable[[], None]) -> None:
        self._clock = clock
        self._when = when
        self._callback = callback
        self._loop = asyncio.get_running_loop()
        self._timer = self._loop.call_later(max(0.0, when - clock()), self._fire)

    def _fire(self) -> None:
        remaining = self._when - self._clock()
        if remaining > 0:
            self._timer = self._loop.call_later(remaining, self._fire)
            return
        self._callback()

    def cancel(self) -> None:
        self._timer.cancel()


def alarm(clock: Clock, when: float, callback: Callable[[], None]) -> Cancel:
    """Call ``callback`` on the running loop once ``clock()`` reaches ``when``; returns its cancel.

    Never called from within ``alarm`` itself, even when ``when`` has passed already.
    """
    if isinstance(clock, ManualClock):
        if when <= clock():
            return _LoopAlarm(clock, when, callback).cancel
        return clock.at(when, callback)
    return _LoopAlarm(clock, when, callback).cancel


def _call_on(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    # At once on the loop's own thread (tests advance the clock there); else through the loop.
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        callback()
    else:
        loop.call_soon_threadsafe(callback)


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
