"""The small pub/sub interface the rest of the agent uses.

Everything above this module speaks in envelopes, presence events and status changes;
which SDK or transport carries them is the implementation's business
(``pubnub_bus.PubNubBus`` in production and tests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

# PubNub refuses publishes over 32 KiB; larger incoming payloads are dropped unread.
MAX_MESSAGE_BYTES = 32 * 1024


@dataclass(frozen=True)
class Envelope:
    """One message received on a channel: already decrypted and size-checked."""

    channel: str
    message: Any
    publisher: str | None
    timetoken: int
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class PresenceEvent:
    """A join, leave, timeout or state change on ``channel`` (the channel itself, not ``-pnpres``)."""

    channel: str
    action: str
    user_id: str | None
    occupancy: int | None
    timetoken: int


class ConnectionStatus(StrEnum):
    IDLE = "idle"  # nothing subscribed
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    ACCESS_DENIED = "access-denied"  # 403: the token is missing, expired or revoked
    STOPPED = "stopped"
    FAILED = "failed"  # one of the bus's own loops ended: nothing is delivered until it is rebuilt


@dataclass(frozen=True)
class StatusChange:
    status: ConnectionStatus
    reason: str | None = None
    # Consecutive failed subscribe attempts; 0 once connected.
    failures: int = 0
    # Channels whose messages may have been missed and were caught up from the last timetoken.
    caught_up_from: int | None = None
    # After a failed attempt: seconds until the next one (what the agent's status says it waits for).
    retry_in: float | None = None


@dataclass(frozen=True)
class PublishResult:
    timetoken: int


class BusError(Exception):
    """A pub/sub request that failed; ``retryable`` says whether trying again can help.

    ``retry_after``: the least wait before trying again, when the failure calls for one (the proxy
    refused proxy_authorization: a sooner retry would only send the refused password again)."""

    def __init__(
        self,
        operation: str,
        reason: str,
        *,
        status_code: int | None = None,
        retryable: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{operation}: {reason}" + (f" (HTTP {status_code})" if status_code else ""))
        self.operation = operation
        self.reason = reason
        self.status_code = status_code
        self.retryable = retryable
        self.retry_after = retry_after


class AccessDeniedError(BusError):
    """Access Manager refused the request (HTTP 403). ``token_generation``: which of the bus's tokens
    the request carried (``Bus.token_generation`` when it was sent), when the bus knows."""

    def __init__(self, operation: str, token_generation: int | None = None) -> None:
        super().__init__(operation, "access denied by Access Manager", status_code=403, retryable=False)
        self.token_generation = token_generation


MessageHandler = Callable[[Envelope], Awaitable[None] | None]
PresenceHandler = Callable[[PresenceEvent], Awaitable[None] | None]
StatusHandler = Callable[[StatusChange], None]


@dataclass(eq=False)
class Subscription:
    """A set of channels and the handlers for what arrives on them. Close it to unsubscribe.

    ``covered``: the channels come through a wildcard subscription already open on the same bus
    and are not listed in the subscribe request themselves (they cost none of its channels).
    """

    channels: frozenset[str]
    on_message: MessageHandler | None
    on_presence: PresenceHandler | None
    with_presence: bool
    _closer: Callable[[Subscription], Awaitable[None]] = field(repr=False)
    covered: bool = False

    async def close(self) -> None:
        await self._closer(self)


class Bus(Protocol):
    """Publish, subscribe, history, user metadata and the Access Manager token."""

    @property
    def user_id(self) -> str: ...

    @property
    def status(self) -> ConnectionStatus: ...

    async def publish(
        self, channel: str, message: Any, *, store: bool = True, meta: Mapping[str, Any] | None = None
    ) -> PublishResult: ...

    def publish_size(self, channel: str, message: Any) -> int:
        """The bytes PubNub counts against its limit for ``message`` on ``channel`` as this bus
        would publish it (encrypted when it encrypts); ``BusError`` if it cannot be sent at all."""
        ...

    async def subscribe(
        self,
        channels: Iterable[str],
        on_message: MessageHandler | None = None,
        *,
        on_presence: PresenceHandler | None = None,
        with_presence: bool = False,
        covered: bool = False,
    ) -> Subscription: ...

    async def history(
        self, channel: str, *, since: int | None = None, limit: int = 100
    ) -> list[Envelope]: ...

    async def here_now(self, channels: Iterable[str]) -> dict[str, frozenset[str]]:
        """Who is present on each of ``channels`` now (PubNub's here_now): channel -> user IDs,
        an empty set for a channel nobody is on. What subscribing learns only from the join and
        leave events after it: a subscriber asks this at start and after a reconnect."""
        ...

    async def get_user_metadata(self, user_id: str) -> dict[str, Any]: ...

    async def set_user_metadata(self, user_id: str, custom: Mapping[str, Any]) -> None: ...

    def set_token(self, token: str | None) -> None: ...

    @property
    def token_generation(self) -> int:
        """How many times ``set_token`` was called: a refusal of an older one is not this token's."""
        ...

    def add_status_listener(self, listener: StatusHandler) -> Callable[[], None]: ...

    async def aclose(self) -> None: ...
