"""Log records for a test to read and wait on (``tests.support.recorder``: no sleeps).

``LogLines``: each record's message as it comes; ``await wait_for(matches)`` or ``await
wait_line(*parts)`` returns the first line that matches. ``attached(handler, logger)``: the
handler on ``logger`` (or on the logger named by ``on``) with ``logger`` at DEBUG for the ``with``
block, both restored after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tests.support.recorder import Recorder

WAIT = 15.0

H = TypeVar("H", bound=logging.Handler)


@contextmanager
def attached(handler: H, logger: str, *, on: str | None = None) -> Iterator[H]:
    target = logging.getLogger(logger if on is None else on)
    watched = logging.getLogger(logger)
    previous = watched.level
    target.addHandler(handler)
    watched.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        target.removeHandler(handler)
        watched.setLevel(previous)


class LogLines(logging.Handler):
    """The log lines as they come, and a way to wait for one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.recorder = Recorder()

    @property
    def lines(self) -> list[str]:
        return self.recorder.items

    @lines.setter
    def lines(self, kept: list[str]) -> None:
        """Keep only ``kept`` (a test forgets the lines it has seen)."""
        self.recorder.items[:] = kept

    def emit(self, record: logging.LogRecord) -> None:
        self.recorder.add(record.getMessage())

    async def wait_for(self, matches: Callable[[str], bool], within: float = 10.0) -> str:
        return str((await self.recorder.wait_for(matches, within=within))[0])

    async def wait_line(self, *parts: str, within: float = WAIT) -> str:
        """The first line holding every one of ``parts``."""
        return await self.wait_for(lambda line: all(part in line for part in parts), within)

    def faults(self) -> list[str]:
        return [line for line in self.lines if line.startswith("bus connection fault")]
