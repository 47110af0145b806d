"""The in-process event hub: fans every event out to every subscriber, each at its own pace.

- ``EventSink``: anything with ``emit(event)`` (the hub, or a part's way to it).
- ``EventHub.emit(event)``: synchronous, never blocks and never raises into the emitter. Call it
  from the event loop's thread (every emitter in the agent runs there).
- ``EventHub.subscribe(max_pending=...)``: an async iterator of events with its own bounded
  buffer. A slow subscriber loses its oldest events and then receives ``Missed(count)`` in their
  place; it never holds up the emitter or the other subscribers. Use it as an async context
  manager or call ``close()`` to unsubscribe; ``take_nowait()`` takes what it holds at once.
- ``EventHub.close()``: ends every subscription (each drains what it already holds, then stops);
  later emits are ignored and later subscriptions end at once.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import Final, Protocol

from telehealth_client.events.catalogue import Event, Missed

DEFAULT_MAX_PENDING: Final = 256


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


class EventSubscription:
    """One subscriber's view of the hub: an async iterator with a bounded buffer."""

    def __init__(self, hub: EventHub, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending: must be at least 1, got {max_pending}")
        self._hub = hub
        self._pending: deque[Event] = deque()
        self._max_pending = max_pending
        self._missed = 0
        self._closed = False
        self._wakeup = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    def _deliver(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._pending) >= self._max_pending:
            self._pending.popleft()  # the oldest goes: a live view wants the newest
            self._missed += 1
        self._pending.append(event)
        self._wakeup.set()

    def _end(self) -> None:
        self._closed = True
        self._wakeup.set()

    def close(self) -> None:
        """Unsubscribe; what is already buffered is discarded."""
        self._pending.clear()
        self._missed = 0
        self._hub._forget(self)
        self._end()

    def __aiter__(self) -> EventSubscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._missed:
                count, self._missed = self._missed, 0
                return Missed(count)
            if self._pending:
                return self._pending.popleft()
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()

    def take_nowait(self) -> list[Event]:
        """Everything this subscriber holds now, in order (``Missed`` first if it fell behind),
        taken without waiting: for a reader that must be current at a given moment (a metrics
        scrape folds what was emitted before it)."""
        taken: list[Event] = []
        if self._missed:
            taken.append(Missed(self._missed))
            self._missed = 0
        taken.extend(self._pending)
        self._pending.clear()
        return taken

    async def __aenter__(self) -> EventSubscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventHub:
    """Fans every event out to every subscriber, each at its own pace."""

    def __init__(self) -> None:
        self._subscriptions: list[EventSubscription] = []
        self._closed = False

    @property
    def subscriber_count(self) -> int:
        return len(self._subscriptions)

    def subscribe(self, max_pending: int = DEFAULT_MAX_PENDING) -> EventSubscription:
        subscription = EventSubscription(self, max_pending)
        if self._closed:
            subscription._end()
        else:
            self._subscriptions.append(subscription)
        return subscription

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every subscriber; returns at once whatever the subscribers do."""
        if self._closed:
            return
        for subscription in tuple(self._subscriptions):
            subscription._deliver(event)

    def close(self) -> None:
        self._closed = True
        subscriptions, self._subscriptions = self._subscriptions, []
        for subscription in subscriptions:
            subscription._end()

    def _forget(self, subscription: EventSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
