"""Connections a real agent's API bounds: event streams capped per agent (503 ``too-many-streams``
beyond it), and a connection that does not send a whole request's headers in time is closed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest

from telehealth_client.api import app as api_app
from telehealth_client.api.stream_slots import MAX_STREAMS
from tests.support.api import KIOSK, Agents, RunningAgent

pytestmark = pytest.mark.integration

SHORT_HEADER_SECONDS = 0.5
CLOSED_WITHIN = 5.0  # ten times the bound: room for a loaded machine, far below aiohttp's hour


@contextlib.asynccontextmanager
async def open_streams(running: RunningAgent, count: int) -> AsyncIterator[list[aiohttp.ClientResponse]]:
    """``count`` event streams, each answered (200 and its headers) before the next opens."""
    async with contextlib.AsyncExitStack() as streams:
        opened = []
        for _ in range(count):
            response = await streams.enter_async_context(
                running.api.session.get(running.api.base + "/v1/events", headers=running.api.headers())
            )
            assert response.status == 200
            opened.append(response)
        yield opened


async def test_event_streams_beyond_the_cap_are_503_too_many_streams(kiosk: RunningAgent) -> None:
    async with open_streams(kiosk, MAX_STREAMS):
        status, answer = await kiosk.api.get("/v1/events")
        assert status == 503, answer
        assert answer["error"] == "too-many-streams" and str(MAX_STREAMS) in answer["message"], answer
        # Other routes still answer.
        assert (await kiosk.api.get("/v1/status"))[0] == 200


async def closed_within(host: str, port: int, sent: bytes, within: float) -> bytes:
    """What the server sent before closing a connection on which only ``sent`` was written."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(sent)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), within)  # EOF: the server closed it
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_a_connection_without_whole_headers_in_time_is_closed(
    agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_app, "HEADER_SECONDS", SHORT_HEADER_SECONDS)
    running = await agents.start(KIOSK)
    host, _, port = running.api.base.removeprefix("http://").rpartition(":")
    half = b"GET /v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bea"
    assert await closed_within(host, int(port), half, CLOSED_WITHIN) == b""
    assert await closed_within(host, int(port), b"", CLOSED_WITHIN) == b""
    # A whole request is still answered.
    assert (await running.api.get("/v1/health", token=None))[0] == 200
