"""A cap on one kind of long-lived answer (event streams, preview streams) open at once.

Each stream holds a socket and a task for as long as its client stays; without a cap a runaway
client (or a page reloaded in a loop) could exhaust the agent's file descriptors. Beyond the cap
the request is refused 503 ``too-many-streams``, naming the kind and the cap, so a technician
knows why and what to close.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from telehealth_client.api.errors import ApiError

# Per agent and per kind: far more than a technician page and a monitoring tool need.
MAX_STREAMS = 16


class StreamSlots:
    """At most ``limit`` streams of ``kind`` at once: ``with slots.held(): ...`` serves one."""

    def __init__(self, kind: str, limit: int = MAX_STREAMS) -> None:
        self.kind = kind
        self.limit = limit
        self.open = 0

    @contextmanager
    def held(self) -> Iterator[None]:
        """A slot for the block; ApiError 503 when every slot is taken (nothing is held then)."""
        if self.open >= self.limit:
            raise ApiError(
                503,
                "too-many-streams",
                f"{self.limit} {self.kind} streams are already open on this agent; close one and retry",
            )
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1
