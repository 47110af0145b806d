"""The live event stream: every hub event as Server-Sent Events, resumable without gaps or repeats.

``EventRing`` follows the hub from the API's start and keeps the newest ``capacity`` events, each
with an ``id`` that only grows: it starts at the agent's start time in microseconds, so an ID from
an earlier run of the agent is always older than this run's. ``GET /v1/events`` sends, after the
``Last-Event-ID`` asked for (header, or ``?lastEventId=``), every event the ring holds and then each
new one as it comes; without one, only new events. When the ID asked for is older than the ring's
oldest event, a ``missed`` event (no ``id``) says how many are gone before the rest follows; a hub
``missed`` (the ring fell behind the hub) is kept in the ring like any event. Events carry IDs,
states and codes only (``events/catalogue.py``): never PHI, tokens or keys.

Public API: ``EventRing(hub, capacity)``: ``start()``, ``await aclose()``, ``last_id``,
``since(last_id)``, ``holds_after(last_id)``, ``latest(kind)``, ``await wait_after(last_id, within)``;
``stream_events(request, ring)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import time
from collections import deque
from typing import Any, NamedTuple

from aiohttp import web
from pydantic_core import to_jsonable_python

from telehealth_client.events import EventHub
from telehealth_client.events.catalogue import Event, Missed
from telehealth_client.tasks import OwnedTasks

DEFAULT_CAPACITY = 1024
# A comment line this often keeps proxies and clients from timing an idle stream out.
KEEPALIVE_SECONDS = 15.0


class RingEntry(NamedTuple):
    id: int
    kind: str
    data: str  # the event as JSON


def event_json(event: Event) -> tuple[str, str]:
    """The event's ``kind`` and its fields as JSON (``kind`` included)."""
    kind = getattr(event, "kind", type(event).__name__)
    fields: dict[str, Any] = (
        {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
        if dataclasses.is_dataclass(event)
        else {}
    )
    payload = {"kind": kind, **to_jsonable_python(fields)}
    return kind, json.dumps(payload, separators=(",", ":"))


def _frame(entry: RingEntry) -> bytes:
    return f"id: {entry.id}\nevent: {entry.kind}\ndata: {entry.data}\n\n".encode()


def missed_frame(after: int, oldest: int | None, count: int, reason: str) -> bytes:
    data = json.dumps(
        {"kind": "missed", "lastEventId": after, "oldestId": oldest, "count": count, "reason": reason},
        separators=(",", ":"),
    )
    return f"event: missed\ndata: {data}\n\n".encode()


class EventRing:
    def __init__(self, hub: EventHub, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: must be at least 1, got {capacity}")
        self._entries: deque[RingEntry] = deque(maxlen=capacity)
        # Subscribed now (before the agent's parts start), so the ring misses nothing they tell.
        self._subscription = hub.subscribe(max_pending=capacity)
        self._next_id = time.time_ns() // 1000
        self.first_id = self._next_id
        self._changed = asyncio.Event()
        self._latest: dict[str, str] = {}  # the newest event of each kind, as JSON
        self._closed = False
        self._tasks = OwnedTasks()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_id(self) -> int:
        """The newest event's ID (before any: one less than the first one's)."""
        return self._next_id - 1

    @property
    def oldest_id(self) -> int | None:
        return self._entries[0].id if self._entries else None

    def start(self) -> None:
        self._tasks.spawn(self._follow(), "api-event-ring")

    async def _follow(self) -> None:
        async for event in self._subscription:
            self.append(event)
        self._closed = True
        self._wake()

    def append(self, event: Event) -> RingEntry:
        if isinstance(event, Missed):
            kind, data = "missed", json.dumps({"kind": "missed", "count": event.count, "reason": "hub"})
        else:
            kind, data = event_json(event)
        entry = RingEntry(self._next_id, kind, data)
        self._latest[kind] = data
        self._next_id += 1
        self._entries.append(entry)
        self._wake()
        return entry

    def latest(self, kind: str) -> dict[str, Any] | None:
        """The newest event of ``kind`` since the API started (its fields), or None."""
        data = self._latest.get(kind)
        return None if data is None else dict(json.loads(data))

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def since(self, last_id: int) -> tuple[int, list[RingEntry]]:
        """(how many events after ``last_id`` are no longer held, the held ones after it)."""
        if not self._entries or last_id >= self._entries[-1].id:
            return 0, []
        oldest = self._entries[0].id
        floor = max(last_id, self.first_id - 1)  # nothing of this run came before first_id
        lost = max(0, oldest - floor - 1)
        start = max(0, last_id + 1 - oldest)
        return lost, [self._entries[i] for i in range(start, len(self._entries))]

    async def wait_after(self, last_id: int, within: float) -> bool:
        """Wait until an event newer than ``last_id`` is held (True) or ``within`` passed or the
        ring closed (False)."""
        if self.holds_after(last_id):
            return True
        if self._closed:
            return False
        changed = self._changed
        try:
            await asyncio.wait_for(changed.wait(), within)
        except TimeoutError:
            return False
        return self.holds_after(last_id)

    def holds_after(self, last_id: int) -> bool:
        """Whether the ring holds an event newer than ``last_id``."""
        # The held events, not ``last_id``: an empty ring holds nothing newer than an ID from before
        # this run (a made-up one: -1), and a stream told otherwise would never wait (a busy loop).
        return bool(self._entries) and self._entries[-1].id > last_id

    async def aclose(self) -> None:
        self._subscription.close()
        await self._tasks.cancel_all()
        self._closed = True
        self._wake()


# What ``requested_id`` reads from a ``Last-Event-ID`` that is no ID this agent gives (not a
# number, or negative): the stream starts with a ``missed`` event, then everything held.
UNKNOWN_ID = -1


def requested_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID") or request.query.get("lastEventId")
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        return UNKNOWN_ID  # not one of ours: everything the ring holds, after a missed event
    return max(value, UNKNOWN_ID)


async def stream_events(request: web.Request, ring: EventRing) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    with contextlib.suppress(ConnectionResetError):  # the client went away: nothing more to send
        await _stream(request, response, ring)
    return response


async def _stream(request: web.Request, response: web.StreamResponse, ring: EventRing) -> None:
    asked = requested_id(request)
    if asked is None:
        after = ring.last_id
        await response.write(b": live events follow\n\n")
    else:
        after = asked
        if asked == UNKNOWN_ID or asked > ring.last_id:
            # Not an ID this run gave: a client from a run that ended, or a made-up one.
            await response.write(missed_frame(asked, ring.oldest_id, 0, "unknown-id"))
            after = ring.first_id - 1
    while not ring.closed or ring.holds_after(after):
        lost, entries = ring.since(after)
        if lost:  # asked for an ID older than the ring's oldest, or a client slower than the ring
            await response.write(missed_frame(after, ring.oldest_id, lost, "older-than-replay"))
        for entry in entries:
            await response.write(_frame(entry))
            after = entry.id
        if entries:
            continue
        if not await ring.wait_after(after, KEEPALIVE_SECONDS) and not ring.closed:
            await response.write(b": keep-alive\n\n")
