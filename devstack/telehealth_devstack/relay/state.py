"""Everything the relay holds, shared by its handlers and kept across stop/start."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .access import Grant, TokenAuthority
from .clock import Clock, Timetokens
from .faults import Faults
from .held_polls import Poll, PollsByToken
from .objects import UuidMetadata
from .persistence import Snapshot, StateFiles
from .presence import Presence
from .store import MessageStore, StoredMessage


@dataclass(frozen=True, slots=True)
class Limits:
    max_messages_per_channel: int = 1000
    max_channels: int = 10_000
    max_message_bytes: int = 32 * 1024  # PubNub's limit, escaped message plus channel name
    presence_timeout: float = 300.0  # PubNub's default when a client sends no ``heartbeat``
    subscribe_timeout: float = 280.0  # PubNub answers an idle long-poll after about this long
    max_messages_per_poll: int = 100


@dataclass(frozen=True, slots=True)
class Keys:
    publish_key: str
    subscribe_key: str
    secret_key: str


@dataclass(slots=True)
class RelayState:
    keys: Keys
    limits: Limits
    clock: Clock
    enforce_access: bool
    timetokens: Timetokens = field(default_factory=Timetokens)
    faults: Faults = field(default_factory=Faults)
    polls: set[Poll] = field(default_factory=set)
    _poll_watchers: list[tuple[Callable[[int], bool], asyncio.Future[None]]] = field(default_factory=list)
    store: MessageStore = field(init=False)
    presence: Presence = field(init=False)
    tokens: TokenAuthority = field(init=False)
    held: PollsByToken = field(init=False)
    uuid_metadata: UuidMetadata = field(init=False)
    files: StateFiles | None = None

    def __post_init__(self) -> None:
        self.store = MessageStore(self.limits.max_messages_per_channel, self.limits.max_channels)
        self.presence = Presence(self.clock, self._emit_presence)
        self.tokens = TokenAuthority(self.keys.secret_key, self.clock)
        self.held = PollsByToken(self.clock, self.presence)
        self.uuid_metadata = UuidMetadata(self.limits.max_channels)

    def attach(self, files: StateFiles, snapshot: Snapshot | None) -> None:
        """Write through to ``files`` from now on; first take back what they kept, if ``snapshot``."""
        self.files = files
        self.store.history_log = files
        self.uuid_metadata.log = files
        if snapshot is None:
            return
        self.store.restore(snapshot.messages)
        if snapshot.messages:
            self.timetokens.observe(snapshot.messages[-1].timetoken)
        self.uuid_metadata.restore(snapshot.uuid_metadata)
        self.tokens.restore_revoked(snapshot.revoked)

    def detach(self) -> StateFiles | None:
        """Stop writing through; returns the files for the caller to close."""
        files, self.files = self.files, None
        self.store.history_log = None
        self.uuid_metadata.log = None
        return files

    def revoke(self, token: str) -> Grant:
        """Revoke ``token``; its held long-polls are refused before this returns."""
        grant = self.tokens.revoke(token)
        if self.files is not None:
            self.files.add_revoked(grant.signature, grant.expires_at())
        self.held.revoked(grant.signature)
        return grant

    def deliver(
        self,
        channel: str,
        payload: Any,
        *,
        publisher: str | None,
        meta: Any = None,
        message_type: int = 0,
        custom_message_type: str | None = None,
        stored: bool = True,
    ) -> int:
        """Put a message on ``channel`` for subscribers (and history when ``stored``); its timetoken."""
        timetoken = self.timetokens.next()
        message = StoredMessage(
            channel=channel,
            timetoken=timetoken,
            payload=payload,
            publisher=publisher,
            meta=meta,
            message_type=message_type,
            custom_message_type=custom_message_type,
            stored=stored,
        )
        self.store.add(message)
        return timetoken

    def add_poll(self, poll: Poll, grant: Grant | None) -> None:
        """``grant``: the token that let the poll in (None when no token was checked)."""
        self.polls.add(poll)
        if grant is not None:
            self.held.hold(poll, grant)
        self._notify_poll_watchers()

    def remove_poll(self, poll: Poll) -> None:
        self.polls.discard(poll)
        self.held.release(poll)
        self._notify_poll_watchers()

    async def wait_polls(self, condition: Callable[[int], bool]) -> None:
        """Return once ``condition(number of pending long-polls)`` holds."""
        if condition(len(self.polls)):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._poll_watchers.append((condition, waiter))
        try:
            await waiter
        finally:
            # A waiter given up (a caller's timeout) must not stay in the list.
            self._poll_watchers = [(c, w) for c, w in self._poll_watchers if w is not waiter]

    def _notify_poll_watchers(self) -> None:
        pending = len(self.polls)
        for condition, waiter in self._poll_watchers:
            if not waiter.done() and condition(pending):
                waiter.set_result(None)
        self._poll_watchers = [(c, w) for c, w in self._poll_watchers if not w.done()]

    def drop_polls(self) -> int:
        polls = list(self.polls)
        for poll in polls:
            poll.dropped = True
            if poll.transport is not None:
                poll.transport.abort()
            if not poll.wake.done():
                poll.wake.set_result(None)
        return len(polls)

    def _emit_presence(self, channel: str, payload: dict[str, Any]) -> None:
        self.deliver(channel, payload, publisher=None, stored=False)
