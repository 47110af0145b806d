"""A real HTTP hop between a bus and the relay, for what the relay itself does not show.

It forwards every request to the relay unchanged and answers with the relay's answer, and
it can (1) count heartbeats the relay answered and (2) answer the next resumed long-poll
with an earlier subscribe answer again, as PubNub may redeliver after a reconnect.
Not a fake: every answer the bus reads was produced by the relay.
"""

from __future__ import annotations

import asyncio
import json
from typing import Self

import aiohttp
from aiohttp import web

from telehealth_devstack.relay import Relay


class Tap:
    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port = 0
        self._heartbeats = 0
        self._heartbeat_seen = asyncio.Condition()
        self._last_answer: bytes | None = None
        self._replay = False

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    @property
    def origin(self) -> str:
        return f"127.0.0.1:{self._port}"

    @property
    def heartbeats(self) -> int:
        """Heartbeats the relay answered with 200."""
        return self._heartbeats

    async def wait_for_heartbeats(self, count: int) -> None:
        async with self._heartbeat_seen:
            await self._heartbeat_seen.wait_for(lambda: self._heartbeats >= count)

    def replay_next_poll(self) -> None:
        """Answer the next resumed long-poll with the last subscribe answer that carried messages."""
        assert self._last_answer is not None, "no subscribe answer with messages seen yet"
        self._replay = True

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        subscribe = request.path.startswith("/v2/subscribe/")
        resumed = subscribe and request.query.get("tt", "0") != "0"
        if resumed and self._replay and self._last_answer is not None:
            self._replay = False
            return web.Response(body=self._last_answer, content_type="application/json")
        try:
            async with self._session.request(
                request.method,
                self._relay.url + request.raw_path,
                data=await request.read(),
                headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
            ) as upstream:
                body = await upstream.read()
                status, content_type = upstream.status, upstream.content_type
        except aiohttp.ClientError:
            # The relay is down: cut the connection, as the relay's absence would.
            if request.transport is not None:
                request.transport.close()
            raise web.HTTPBadGateway() from None
        if resumed and status == 200 and json.loads(body).get("m"):
            self._last_answer = body
        if request.path.endswith("/heartbeat") and status == 200:
            async with self._heartbeat_seen:
                self._heartbeats += 1
                self._heartbeat_seen.notify_all()
        return web.Response(status=status, body=body, content_type=content_type)
