"""In-memory, bounded message store: what subscribers catch up from and what history answers.

Each channel keeps two bounded logs: ``live`` holds every message (stored or not) so that a
subscriber resuming from a timetoken gets what it missed, as PubNub's short per-channel queue
does; ``history`` holds only messages published with ``store`` on. The oldest message goes first
when a log is full, and the least recently used channel goes first when there are too many.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .wildcard import is_wildcard, wildcards_bringing

MESSAGE = 0
SIGNAL = 1
OBJECTS_EVENT = 2
FILE_EVENT = 4


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message as the relay holds it; ``payload`` is exactly the JSON value the publisher sent."""

    channel: str
    timetoken: int
    payload: Any
    publisher: str | None
    meta: Any | None = None
    message_type: int = MESSAGE
    custom_message_type: str | None = None
    stored: bool = True


class HistoryLog(Protocol):
    """Where stored messages are also written, to outlive the relay (``persistence.StateFiles``)."""

    def add_message(self, message: StoredMessage, evicted: StoredMessage | None) -> None: ...

    def drop_channel(self, channel: str) -> None: ...

    def delete_messages(self, channel: str, timetokens: list[int]) -> None: ...


@dataclass(slots=True)
class _ChannelLog:
    live: deque[StoredMessage]
    history: deque[StoredMessage]


@dataclass(slots=True)
class MessageStore:
    max_messages_per_channel: int
    max_channels: int
    history_log: HistoryLog | None = None
    _logs: OrderedDict[str, _ChannelLog] = field(default_factory=OrderedDict)
    _waiters: dict[str, set[asyncio.Future[None]]] = field(default_factory=dict)
    _wildcard_waiters: dict[str, set[asyncio.Future[None]]] = field(default_factory=dict)
    # Wildcard -> the channels with a log that it brings: a wildcard poll reads these, not every log.
    _brought_by: dict[str, set[str]] = field(default_factory=dict)

    def add(self, message: StoredMessage) -> None:
        log = self._log(message.channel)
        log.live.append(message)
        if message.stored:
            full = len(log.history) == log.history.maxlen
            evicted = log.history[0] if full else None
            log.history.append(message)
            if self.history_log is not None:
                self.history_log.add_message(message, evicted)
        woken = set(self._waiters.get(message.channel, ()))
        for wildcard in wildcards_bringing(message.channel):
            woken |= self._wildcard_waiters.get(wildcard, set())
        for waiter in woken:
            if not waiter.done():
                waiter.set_result(None)

    def since(self, channels: Iterable[str], timetoken: int, limit: int) -> list[StoredMessage]:
        """Messages on ``channels`` (wildcards bring what they match) newer than ``timetoken``,
        oldest first, at most ``limit``."""
        found: list[StoredMessage] = []
        for channel in self._brought(channels):
            log = self._logs.get(channel)
            if log is None:
                continue
            for message in reversed(log.live):
                if message.timetoken <= timetoken:
                    break
                found.append(message)
        found.sort(key=lambda m: m.timetoken)
        return found[:limit]

    def _brought(self, names: Iterable[str]) -> list[str]:
        """The concrete channels ``names`` bring, each once (a channel both listed and matched by
        a wildcard is still one channel)."""
        listed = list(names)
        brought = dict.fromkeys(name for name in listed if not is_wildcard(name))
        for wildcard in (name for name in listed if is_wildcard(name)):
            brought.update(dict.fromkeys(self._brought_by.get(wildcard, ())))
        return list(brought)

    def history(self, channel: str) -> list[StoredMessage]:
        log = self._logs.get(channel)
        return list(log.history) if log is not None else []

    def delete_history(self, channel: str, start: int | None, end: int | None) -> int:
        """Remove stored messages with ``end <= timetoken < start`` (PubNub's range); returns how many."""
        log = self._logs.get(channel)
        if log is None:
            return 0
        keep = [m for m in log.history if not _in_range(m.timetoken, start, end)]
        removed = [m.timetoken for m in log.history if _in_range(m.timetoken, start, end)]
        log.history = deque(keep, maxlen=self.max_messages_per_channel)
        if removed and self.history_log is not None:
            self.history_log.delete_messages(channel, removed)
        return len(removed)

    def restore(self, messages: Iterable[StoredMessage]) -> None:
        """Put back stored messages kept from an earlier run (oldest first) into history only."""
        for message in messages:
            self._log(message.channel).history.append(message)

    def channels(self) -> list[str]:
        return list(self._logs)

    def all_messages(self) -> list[StoredMessage]:
        seen: dict[tuple[str, int], StoredMessage] = {}
        for log in self._logs.values():
            for message in (*log.live, *log.history):
                seen[(message.channel, message.timetoken)] = message
        return sorted(seen.values(), key=lambda m: m.timetoken)

    def watch(self, channels: Iterable[str]) -> asyncio.Future[None]:
        """A future resolved by the next message on any of ``channels``; pass it to ``unwatch``."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for channel in channels:
            self._watchers(channel).setdefault(channel, set()).add(waiter)
        return waiter

    def unwatch(self, channels: Iterable[str], waiter: asyncio.Future[None]) -> None:
        for channel in channels:
            watchers = self._watchers(channel)
            waiters = watchers.get(channel)
            if waiters is None:
                continue
            waiters.discard(waiter)
            if not waiters:
                del watchers[channel]

    def _watchers(self, name: str) -> dict[str, set[asyncio.Future[None]]]:
        return self._wildcard_waiters if is_wildcard(name) else self._waiters

    def _log(self, channel: str) -> _ChannelLog:
        log = self._logs.get(channel)
        if log is None:
            bound = self.max_messages_per_channel
            log = _ChannelLog(deque(maxlen=bound), deque(maxlen=bound))
            self._logs[channel] = log
            for wildcard in wildcards_bringing(channel):
                self._brought_by.setdefault(wildcard, set()).add(channel)
            while len(self._logs) > self.max_channels:
                dropped, _ = self._logs.popitem(last=False)
                for wildcard in wildcards_bringing(dropped):
                    self._brought_by[wildcard].discard(dropped)
                    if not self._brought_by[wildcard]:
                        del self._brought_by[wildcard]
                if self.history_log is not None:
                    self.history_log.drop_channel(dropped)
        else:
            self._logs.move_to_end(channel)
        return log


def _in_range(timetoken: int, start: int | None, end: int | None) -> bool:
    if start is not None and timetoken >= start:
        return False
    return not (end is not None and timetoken < end)


def select_history(
    messages: list[StoredMessage], start: int | None, end: int | None, limit: int
) -> list[StoredMessage]:
    """PubNub's history range: ``start`` exclusive, ``end`` inclusive, oldest first.

    With only ``end`` the oldest ``limit`` messages from ``end`` on are returned (paging forward);
    otherwise the newest ``limit`` messages of the range (paging backward with ``start``).
    """
    chosen = [m for m in messages if _in_range(m.timetoken, start, end)]
    if end is not None and start is None:
        return chosen[:limit]
    return chosen[-limit:] if limit > 0 else []
