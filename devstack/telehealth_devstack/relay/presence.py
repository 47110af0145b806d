"""Presence: who is on which channel, and the join/leave/timeout events PubNub sends about it.

A subscribe or a heartbeat keeps a user present for its ``heartbeat`` seconds, and the end of
a long-poll counts as one more. An open long-poll alone does not: as with PubNub, a user whose
heartbeats stop times out after its ``heartbeat`` interval even while its long-poll is open
(a client asking for a presence timeout shorter than the long-poll must send heartbeats).
A re-subscribe by a user who is still present produces no new ``join``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .clock import Clock

PRESENCE_SUFFIX = "-pnpres"

Emit = Callable[[str, dict[str, Any]], None]
"""Called with the presence channel (``{channel}-pnpres``) and the event payload."""


@dataclass(slots=True)
class _Member:
    expires_at: float
    state: Any = None


@dataclass(slots=True)
class Presence:
    clock: Clock
    emit: Emit
    _channels: dict[str, dict[str, _Member]] = field(default_factory=dict)

    def heartbeat(
        self, channels: Iterable[str], uuid: str, timeout: float, state: dict[str, Any] | None = None
    ) -> None:
        now = self.clock()
        for channel in channels:
            members = self._channels.setdefault(channel, {})
            member = members.get(uuid)
            if member is None:
                member = members[uuid] = _Member(now + timeout)
                self._event(channel, "join", uuid)
            member.expires_at = max(member.expires_at, now + timeout)
            if state is not None and channel in state:
                member.state = state[channel]

    def leave(self, channels: Iterable[str], uuid: str) -> None:
        """The user said it leaves (an unsubscribe): ``leave`` events."""
        self._remove(channels, uuid, "leave")

    def time_out(self, channels: Iterable[str], uuid: str) -> None:
        """The user is gone without saying so (its access ended): ``timeout`` events, now."""
        self._remove(channels, uuid, "timeout")

    def _remove(self, channels: Iterable[str], uuid: str, action: str) -> None:
        for channel in channels:
            members = self._channels.get(channel)
            if members is not None and members.pop(uuid, None) is not None:
                self._event(channel, action, uuid)
                self._drop_if_empty(channel)

    def expire(self) -> None:
        """Time out every user whose presence lapsed."""
        now = self.clock()
        for channel in list(self._channels):
            members = self._channels[channel]
            for uuid, member in list(members.items()):
                if member.expires_at > now:
                    continue
                del members[uuid]
                self._event(channel, "timeout", uuid)
            self._drop_if_empty(channel)

    def poll_closed(self, channels: Iterable[str], uuid: str, timeout: float) -> None:
        """A long-poll's end counts as a heartbeat for a user still present (not a new join)."""
        now = self.clock()
        for channel in channels:
            member = self._channels.get(channel, {}).get(uuid)
            if member is not None:
                member.expires_at = max(member.expires_at, now + timeout)

    def occupants(self, channel: str) -> dict[str, Any]:
        """User ID -> state of everyone present on ``channel``."""
        return {uuid: m.state for uuid, m in self._channels.get(channel, {}).items()}

    def channels(self) -> list[str]:
        return list(self._channels)

    def _event(self, channel: str, action: str, uuid: str) -> None:
        payload = {
            "action": action,
            "uuid": uuid,
            "occupancy": len(self._channels.get(channel, {})),
            "timestamp": int(self.clock()),
        }
        self.emit(channel + PRESENCE_SUFFIX, payload)

    def _drop_if_empty(self, channel: str) -> None:
        if not self._channels.get(channel):
            self._channels.pop(channel, None)
