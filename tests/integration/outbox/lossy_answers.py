"""A real HTTP hop that lets a publish reach the relay and loses its answer.

The relay receives, stores and delivers the publish; the client never learns it: with ``drop``
the connection is closed instead of answered (a link that died on the way back), with ``hold``
no answer comes until the client gives up (a timeout) or the process dies. Either way the
outcome is unknown to the sender, which is what exactly-once delivery has to cope with. Every
other request is forwarded and answered as the relay answered it.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from telehealth_devstack.relay import Relay
from tests.support.tap import Tap


class LossyAnswers(Tap):
    def __init__(self, relay: Relay) -> None:
        super().__init__(relay)
        self._lose_left = 0
        self._pass_first = 0
        self._mode = "drop"
        self._lost = 0
        self._lost_seen = asyncio.Condition()
        self._never = asyncio.Event()

    def lose_next_publish_answers(self, count: int, *, mode: str = "drop", after: int = 0) -> None:
        """Lose the answers of ``count`` publishes, once ``after`` more have been answered normally."""
        assert mode in ("drop", "hold")
        self._lose_left, self._mode, self._pass_first = count, mode, after

    @property
    def lost(self) -> int:
        """Publishes the relay received and stored whose answer was lost."""
        return self._lost

    async def wait_lost(self, count: int) -> None:
        """Return once ``count`` answers were lost (use with ``asyncio.wait_for``)."""
        async with self._lost_seen:
            await self._lost_seen.wait_for(lambda: self._lost >= count)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        answer = await super()._forward(request)
        if not request.path.startswith("/publish/") or self._lose_left <= 0:
            return answer
        if self._pass_first > 0:
            self._pass_first -= 1
            return answer
        self._lose_left -= 1
        async with self._lost_seen:
            self._lost += 1
            self._lost_seen.notify_all()
        if self._mode == "hold":
            await self._never.wait()  # cancelled when the client disconnects
        if request.transport is not None:
            request.transport.close()
        raise web.HTTPBadGateway()  # never reaches the client: its connection is gone
