"""How fast one kiosk's credential may mint patient tokens: a token bucket per kiosk.

A kiosk checks in one patient every few minutes; a credential minting patient tokens by the
hundred is forging check-ins (a flood of them fills a provider's waiting room). Beyond the limit
the clinic answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``per_minute`` on average, up to ``burst`` at once."""

    per_minute: float = 30.0
    burst: int = 10

    def __post_init__(self) -> None:
        if isinstance(self.per_minute, bool) or not self.per_minute > 0 or math.isinf(self.per_minute):
            raise ValueError("per_minute must be a positive number")
        if isinstance(self.burst, bool) or not isinstance(self.burst, int) or self.burst < 1:
            raise ValueError("burst must be a whole number of at least 1")


# A kiosk's ordinary pace with room to spare: a queue of check-ins at opening time passes.
DEFAULT_PATIENT_TOKEN_LIMIT = RateLimit(per_minute=30.0, burst=10)


class RateLimited(Exception):
    """Over the limit; ``retry_after`` whole seconds until one more is allowed."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class RateLimiter:
    """One bucket per key (a kiosk's device ID), each starting full."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.time) -> None:
        self._limit = limit
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (allowance, at)

    def take(self, key: str) -> None:
        """Use one of ``key``'s allowance; RateLimited (nothing used) when none is left."""
        now = self._clock()
        per_second = self._limit.per_minute / 60.0
        allowance, at = self._buckets.get(key, (float(self._limit.burst), now))
        # A clock that went back refills nothing (and takes nothing away).
        allowance = min(float(self._limit.burst), allowance + max(0.0, now - at) * per_second)
        if allowance < 1.0:
            self._buckets[key] = (allowance, now)
            raise RateLimited(max(1, math.ceil((1.0 - allowance) / per_second)))
        self._buckets[key] = (allowance - 1.0, now)
