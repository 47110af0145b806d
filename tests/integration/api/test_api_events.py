"""The live event stream on a real agent: every hub event with an ID that only grows, resumed after a
reconnect with ``Last-Event-ID`` without gaps or repeats, and a ``missed`` event when the ID asked for
is older than what the agent still holds (or not one it gave)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from telehealth_client import events
from telehealth_client.api.events_stream import DEFAULT_CAPACITY
from tests.support.api import PROVIDER, WAIT, Agents, RunningAgent

pytestmark = pytest.mark.integration


class Stream:
    """An open ``GET /v1/events``: its frames one at a time (comments skipped)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def frame(self) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        while True:
            raw = await self.response.content.readline()
            assert raw, "the stream ended"
            line = raw.decode().rstrip("\n")
            if not line:
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = int(value) if name == "id" else json.loads(value) if name == "data" else value

    async def frames(self, count: int) -> list[dict[str, Any]]:
        return [await self.frame() for _ in range(count)]


@asynccontextmanager
async def stream(running: RunningAgent, last_id: int | None = None) -> AsyncIterator[Stream]:
    headers = running.api.headers()
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    async with running.api.session.get(
        running.api.base + "/v1/events", headers=headers, timeout=aiohttp.ClientTimeout(sock_read=WAIT)
    ) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        yield Stream(response)


async def emit(running: RunningAgent, count: int, start: int = 0) -> None:
    """``count`` events on the agent's own hub, each told once the ring holds it."""
    api = running.agent.api
    assert api is not None
    for number in range(start, start + count):
        before = api.ring.last_id
        running.agent.hub.emit(events.ProviderReady(consultation_id=f"consultation.dr-a.pat-{number}"))
        assert await api.ring.wait_after(before, WAIT)


def numbers(frames: list[dict[str, Any]]) -> list[int]:
    return [int(f["data"]["consultation_id"].rsplit("-", 1)[1]) for f in frames]


async def test_a_reconnect_with_last_event_id_resumes_without_gaps_or_repeats(provider: RunningAgent) -> None:
    async with stream(provider) as live:
        await emit(provider, 5)
        first = await live.frames(5)
    assert numbers(first) == [0, 1, 2, 3, 4]
    assert all(f["event"] == "provider-ready" and f["data"]["kind"] == "provider-ready" for f in first)
    ids = [f["id"] for f in first]
    assert ids == list(range(ids[0], ids[0] + 5))

    await emit(provider, 5, start=5)  # while no one listens
    async with stream(provider, last_id=ids[2]) as resumed:
        again = await resumed.frames(7)
        await emit(provider, 1, start=10)
        again.append(await resumed.frame())
    assert numbers(again) == [3, 4, 5, 6, 7, 8, 9, 10]
    assert [f["id"] for f in again] == list(range(ids[3], ids[3] + 8))


async def test_an_id_older_than_the_ring_gets_a_missed_event_then_everything_held(
    provider: RunningAgent,
) -> None:
    async with stream(provider) as live:
        await emit(provider, 1)
        (oldest,) = await live.frames(1)
    await emit(provider, DEFAULT_CAPACITY + 10, start=1)
    async with stream(provider, last_id=oldest["id"]) as resumed:
        missed = await resumed.frame()
        held = await resumed.frames(3)
    assert "id" not in missed and missed["event"] == "missed"
    assert missed["data"]["reason"] == "older-than-replay"
    assert missed["data"]["count"] == held[0]["id"] - oldest["id"] - 1 > 0
    assert held[0]["id"] == missed["data"]["oldestId"]
    assert [f["id"] for f in held] == list(range(held[0]["id"], held[0]["id"] + 3))


async def test_an_id_this_run_never_gave_gets_a_missed_event_then_the_ring(provider: RunningAgent) -> None:
    api = provider.agent.api
    assert api is not None
    await emit(provider, 2)
    async with stream(provider, last_id=api.ring.last_id + 1000) as resumed:
        missed = await resumed.frame()
        held = await resumed.frames(2)
    assert (missed["event"], missed["data"]["reason"]) == ("missed", "unknown-id")
    assert numbers(held) == [0, 1]  # what the agent told since its API started
    assert held[0]["id"] == api.ring.oldest_id
    _, state = await provider.api.get("/v1/status")
    assert state["eventsLastId"] == api.ring.last_id


async def test_stopping_the_agent_ends_the_open_streams(agents: Agents) -> None:
    running = await agents.start(PROVIDER)
    async with stream(running) as live:
        await emit(running, 1)
        await live.frame()
        await asyncio.wait_for(running.agent.aclose(), WAIT)  # not held up by the open stream
        rest = await asyncio.wait_for(live.response.content.read(), WAIT)
    assert b"id:" not in rest  # the stream ended with nothing more
