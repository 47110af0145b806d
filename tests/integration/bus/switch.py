"""A Tap that can be unplugged: one agent's network drops while the relay and everyone else go on.

Unplugged, it cuts every connection it is carrying and every new one, as a pulled cable would
(the client sees the connection closed, never an answer); plugged in again, it forwards as before.
It can also answer the next resumed long-poll with a body of the test's choosing, as a broken
proxy or origin might (the only answer here the relay did not write).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from telehealth_devstack.relay import Relay
from tests.support.tap import Tap


class Switch(Tap):
    def __init__(self, relay: Relay) -> None:
        super().__init__(relay)
        self._plugged = True
        self._carrying: set[asyncio.BaseTransport] = set()
        self._refused = 0
        self._refused_seen = asyncio.Condition()
        self._next_poll_answer: bytes | None = None
        self.subscribe_queries: list[dict[str, str]] = []  # of each long-poll or handshake forwarded
        self.refuse_heartbeats = False  # answer heartbeats with HTTP 503 (polls still go through)

    def unplug(self) -> None:
        self._plugged = False
        for transport in list(self._carrying):
            transport.close()

    def plug(self) -> None:
        self._plugged = True

    def answer_next_poll(self, body: bytes) -> None:
        """Answer the next resumed long-poll (not a handshake) with ``body``, HTTP 200."""
        self._next_poll_answer = body

    @property
    def refused(self) -> int:
        """Requests cut because the switch was unplugged."""
        return self._refused

    async def wait_for_refused(self, count: int) -> None:
        """Return once ``count`` requests were cut while unplugged (use with ``asyncio.wait_for``)."""
        async with self._refused_seen:
            await self._refused_seen.wait_for(lambda: self._refused >= count)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        transport = request.transport
        if not self._plugged or transport is None:
            if transport is not None:
                transport.close()
            async with self._refused_seen:
                self._refused += 1
                self._refused_seen.notify_all()
            raise web.HTTPBadGateway()
        answer, resumed = self._next_poll_answer, request.query.get("tt", "0") != "0"
        if answer is not None and resumed and request.path.startswith("/v2/subscribe/"):
            self._next_poll_answer = None
            return web.Response(body=answer, content_type="application/json")
        if self.refuse_heartbeats and request.path.endswith("/heartbeat"):
            return web.json_response(
                {"status": 503, "error": True, "message": "Service Unavailable"}, status=503
            )
        if request.path.startswith("/v2/subscribe/"):
            self.subscribe_queries.append(dict(request.query))
        self._carrying.add(transport)
        try:
            return await super()._forward(request)
        finally:
            self._carrying.discard(transport)
