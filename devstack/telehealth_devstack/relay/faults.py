"""Faults a test can switch on: stall, delay, and failing the next N requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(slots=True)
class Faults:
    delay: float = 0.0
    _fail_left: int = 0
    _fail_status: int = 503
    _running: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._running.set()

    def stall(self) -> None:
        self._running.clear()

    def resume(self) -> None:
        self._running.set()

    @property
    def stalled(self) -> bool:
        return not self._running.is_set()

    async def wait_running(self) -> None:
        await self._running.wait()

    def fail_next(self, count: int, status: int) -> None:
        if count < 0 or not 400 <= status <= 599:
            raise ValueError("fail_next needs count >= 0 and an HTTP error status")
        self._fail_left = count
        self._fail_status = status

    def take_failure(self) -> int | None:
        """The status to fail this request with, if a failure is still pending."""
        if self._fail_left <= 0:
            return None
        self._fail_left -= 1
        return self._fail_status
