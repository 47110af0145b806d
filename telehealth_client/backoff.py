"""How long to wait before trying again: one exponential back-off for every retry in the agent.

The bus's reconnects, the outbox's publishes, token refreshes, guest revocations, audit delivery
and the call's rebuilds all wait ``low * 2**(failures - 1)`` capped at ``high``; the ones that many
kiosks may do at once (a clinic or PubNub coming back) draw a random wait below that ceiling (full
jitter), so they do not all return in the same second.

Public API: ``ceiling(failures, low, high)`` (pure, no jitter: the call's rebuilds);
``back_off_delay(failures, low, high, draw=random.uniform, floor=None)`` (a draw between ``floor``,
``low`` by default, and the ceiling).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

MAX_DOUBLINGS: Final = 16  # 2**16 times ``low``: far past any ``high``, and no overflow


def ceiling(failures: int, low: float, high: float) -> float:
    """The longest wait after ``failures`` consecutive failures (the first waits ``low``)."""
    return min(high, low * float(2 ** min(max(failures, 1) - 1, MAX_DOUBLINGS)))


def back_off_delay(
    failures: int,
    low: float,
    high: float,
    draw: Callable[[float, float], float] = random.uniform,
    *,
    floor: float | None = None,
) -> float:
    """Seconds to wait after ``failures`` consecutive failures: drawn between ``floor`` (``low``
    unless given) and ``ceiling(failures, low, high)``."""
    return draw(low if floor is None else floor, ceiling(failures, low, high))
