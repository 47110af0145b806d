"""A real HTTP hop that records how many publishes are in flight through it, per channel.

It is ``LossyAnswers`` (so it can also lose answers) with a count around each publish: from the
moment the request reaches the hop until its answer leaves (or is lost). The relay behind it
is slowed with ``Relay.set_delay``, so a publish stays in flight long enough that any two a
client overlapped on one channel overlap here too. Every answer still comes from the relay.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp import web

from telehealth_devstack.relay import Relay
from tests.integration.outbox.lossy_answers import LossyAnswers

# /publish/{pub_key}/{sub_key}/0/{channel}/{callback}/{message}
_CHANNEL_PART = 5


class InFlightTap(LossyAnswers):
    def __init__(self, relay: Relay) -> None:
        super().__init__(relay)
        self._now: Counter[str] = Counter()
        self.most_per_channel: dict[str, int] = {}
        self.most_at_once = 0
        self.publishes: Counter[str] = Counter()  # requests per channel, retries included
        self._changed = asyncio.Condition()

    @property
    def in_flight(self) -> int:
        return sum(self._now.values())

    async def wait_in_flight(self, count: int) -> None:
        """Return once ``count`` publishes are in flight at once (use with ``asyncio.wait_for``)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight >= count)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if not request.path.startswith("/publish/"):
            return await super()._forward(request)
        channel = request.path.split("/")[_CHANNEL_PART]
        async with self._changed:
            self._now[channel] += 1
            self.publishes[channel] += 1
            self.most_per_channel[channel] = max(self.most_per_channel.get(channel, 0), self._now[channel])
            self.most_at_once = max(self.most_at_once, self.in_flight)
            self._changed.notify_all()
        try:
            return await super()._forward(request)
        finally:
            self._now[channel] -= 1  # no await here: a cancelled request must still be counted out
