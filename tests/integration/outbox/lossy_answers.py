"""A real HTTP hop that lets a publish reach the relay and loses its answer.

The relay receives, stores and delivers the publish; the client never learns it: with ``drop``
the connection is closed instead of answered (a link that died on the way back), with ``hold``
no answer comes until the client gives up (a timeout). Either way the outcome is unknown to the
sender, which is what exactly-once delivery has to cope with. Every other request is forwarded.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from telehealth_client.devstack.relay import Relay
from tests.integration.bus.tap import Tap


class LossyAnswers(Tap):
    def __init__(self, relay: Relay) -> None:
        super().__init__(relay)
        self._lose_left = 0
        self._mode = "drop"
        self.lost = 0  # publishes the relay got whose answer was lost
        self._never = asyncio.Event()

    def lose_next_publish_answers(self, count: int, *, mode: str = "drop") -> None:
        assert mode in ("drop", "hold")
        self._lose_left, self._mode = count, mode

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        answer = await super()._forward(request)
        if not request.path.startswith("/publish/") or self._lose_left <= 0:
            return answer
        self._lose_left -= 1
        self.lost += 1
        if self._mode == "hold":
            await self._never.wait()  # cancelled when the client gives up and disconnects
        if request.transport is not None:
            request.transport.close()
        raise web.HTTPBadGateway()  # never reaches the client: its connection is gone
