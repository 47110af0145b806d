"""Held subscribe long-polls and heartbeats, by the token that let each in: a revoked or expired
token ends them.

PROTOCOL (Who calls what): a revoked or expired token stops working at once, including on a
subscribe long-poll already waiting; the server ends such a poll with 403. A token's polls are
refused synchronously, inside the revoke request or the expiry alarm, so a message published
after that never reaches them, and their user leaves ``here_now`` at once: on the channels its
polls held and those its heartbeats (with that token) kept it present on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from .access import Grant
from .clock import Cancel, Clock, alarm
from .errors import RelayError, access_denied
from .presence import Presence


@dataclass(eq=False, slots=True)
class Poll:
    """One pending long-poll: ``drop_subscribers`` cuts it, a revoked or expired token refuses it."""

    transport: asyncio.Transport | None
    wake: asyncio.Future[None]
    uuid: str | None = None
    members: tuple[str, ...] = ()  # the channels it keeps its user present on
    dropped: bool = False
    refusal: RelayError | None = None

    def refuse(self, refusal: RelayError) -> None:
        """Answer ``refusal`` instead of messages, whatever is published from now on."""
        self.refusal = refusal
        if not self.wake.done():
            self.wake.set_result(None)


@dataclass(slots=True)
class _TokenPolls:
    polls: set[Poll]
    cancel_expiry: Cancel
    # User ID -> channels a heartbeat with this token made it present on (kept until the token ends).
    heartbeats: dict[str, set[str]] = field(default_factory=dict)


@dataclass(slots=True)
class PollsByToken:
    clock: Clock
    presence: Presence
    _by_token: dict[bytes, _TokenPolls] = field(default_factory=dict)
    _token_of: dict[Poll, bytes] = field(default_factory=dict)

    def hold(self, poll: Poll, grant: Grant) -> None:
        """Track ``poll``, let in by ``grant``, until ``release``; one expiry alarm per token."""
        held = self._held(grant)
        held.polls.add(poll)
        self._token_of[poll] = grant.signature

    def heartbeat(self, grant: Grant, uuid: str, channels: list[str]) -> None:
        """A heartbeat with ``grant`` keeps ``uuid`` present on ``channels``: they go when it ends."""
        self._held(grant).heartbeats.setdefault(uuid, set()).update(channels)

    def _held(self, grant: Grant) -> _TokenPolls:
        token = grant.signature
        held = self._by_token.get(token)
        if held is None:
            cancel = alarm(self.clock, grant.expires_at(), lambda: self._end(token, "Token is expired."))
            held = self._by_token[token] = _TokenPolls(set(), cancel)
        return held

    def release(self, poll: Poll) -> None:
        token = self._token_of.pop(poll, None)
        held = None if token is None else self._by_token.get(token)
        if token is None or held is None:
            return
        held.polls.discard(poll)
        if not held.polls and not held.heartbeats:
            held.cancel_expiry()
            del self._by_token[token]

    def revoked(self, token: bytes) -> None:
        """``token`` (a grant's signature) was revoked: end its polls now."""
        self._end(token, "Token is revoked.")

    def close(self) -> None:
        """Cancel every alarm (the relay stops; its polls are being dropped)."""
        for held in self._by_token.values():
            held.cancel_expiry()
        self._by_token.clear()
        self._token_of.clear()

    def _end(self, token: bytes, reason: str) -> None:
        held = self._by_token.pop(token, None)
        if held is None:
            return
        held.cancel_expiry()
        for poll in held.polls:
            del self._token_of[poll]
            # The same 403 as a subscribe refused at its start (the SDKs report access denied).
            poll.refuse(access_denied(reason))
        present: dict[str, set[str]] = {uuid: set(channels) for uuid, channels in held.heartbeats.items()}
        for poll in held.polls:
            if poll.uuid is not None:
                present.setdefault(poll.uuid, set()).update(poll.members)
        for uuid, channels in present.items():
            self._leave_presence(uuid, channels)

    def _leave_presence(self, uuid: str, channels: set[str]) -> None:
        # Channels the same user still holds with another, good token (a poll or a heartbeat) stay.
        still_held = {c for other in self._token_of if other.uuid == uuid for c in other.members}
        for other in self._by_token.values():
            still_held.update(other.heartbeats.get(uuid, ()))
        # A "timeout", not a "leave": PubNub sends "leave" only when the client itself leaves
        # (unsubscribe); a user whose access ended stops being heard from, which PubNub reports
        # as a timeout once the presence interval lapses. The relay reports it at once.
        self.presence.time_out(sorted(channels - still_held), uuid)
