"""The bus on the PubNub Python SDK (PubNubAsyncio). SDK workarounds live here and only here.

SDK 10.8 facts this module is shaped by (see DESIGN.md):
- its subscribe loop stops silently on App Context (``e=2``) and file (``e=4``) events,
  and its ``reconnect()`` raises AttributeError. So the SDK's subscription manager is
  disabled and this module runs its own long-poll loop over the SDK's ``Subscribe``
  endpoint: reconnecting forever with capped, jittered back-off, and resuming from the
  last timetoken so nothing published meanwhile is missed;
- ``history()`` fails with a crypto module: ``fetch_messages(decrypt_messages=True)`` is used;
- with ``cipher_key`` alone it publishes the legacy headerless cipher, so both
  ``cipher_key`` and ``crypto_module`` are set;
- its default httpx transport adds about 3 ms per request on loopback; the SDK's own
  aiohttp transport is used instead, routed (proxy, CA bundle) by ``pubsub/transport.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import json
import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pubnub.endpoints.presence.heartbeat import Heartbeat
from pubnub.endpoints.presence.leave import Leave
from pubnub.endpoints.pubsub.subscribe import Subscribe
from pubnub.enums import PNStatusCategory

from telehealth_client.backoff import back_off_delay
from telehealth_client.logs import describe_exception, exception_reason, quiet_url_loggers
from telehealth_client.outbound import PROXY_REFUSED_RETRY_SECONDS, Outbound
from telehealth_client.protocol.channels import presence as presence_channel
from telehealth_client.pubsub import bounded_json
from telehealth_client.pubsub.bus import (
    MAX_MESSAGE_BYTES,
    AccessDeniedError,
    BusError,
    ConnectionStatus,
    Envelope,
    MessageHandler,
    PresenceEvent,
    PresenceHandler,
    PublishResult,
    StatusChange,
    StatusHandler,
    Subscription,
)
from telehealth_client.pubsub.faults import (
    FaultReporter,
    classify,
    classify_exception,
    credentials_refused,
    is_route_fault,
)
from telehealth_client.pubsub.transport import routed_handler
from telehealth_client.pubsub.wildcard import is_wildcard, matches
from telehealth_client.pubsub.wire import (
    Dropped,
    MalformedAnswerError,
    decode_history_item,
    parse_subscribe_answer,
)
from telehealth_client.stop_budgets import budget

if TYPE_CHECKING:
    from pubnub.pnconfiguration import PNConfiguration
    from pubnub.pubnub_asyncio import PubNubAsyncio

    from telehealth_client.pubsub.crypto import RotatingCryptoModule

log = logging.getLogger(__name__)
quiet_url_loggers()  # the SDK and httpx log URLs holding tokens

# How many recent (channel, timetoken) pairs to remember, so a redelivery is handled once.
_SEEN_LIMIT = 2048
# Received but not yet handled; when full, the long-poll waits (back-pressure, nothing dropped).
_DELIVERY_QUEUE_LIMIT = 10_000
_STOP_TIMEOUT_SECONDS = 5.0
# PubNub's documented default: one subscribe request lists at most 100 channels, and the
# `-pnpres` presence channels are channels in that list too.
MAX_CHANNELS_PER_SUBSCRIBE = 100
# Channels named in one here_now request: they all go in its URL, which must stay well short of
# the few kilobytes servers and proxies accept (a consultation channel name is up to ~140 bytes).
HERE_NOW_CHANNELS_PER_REQUEST = 20


@dataclass(frozen=True)
class BusConfig:
    """What the bus needs to reach PubNub (or the development relay)."""

    user_id: str
    subscribe_key: str
    publish_key: str | None = None
    origin: str = "ps.pndsn.com"
    ssl: bool = True
    cipher_key: str | None = None
    previous_cipher_keys: tuple[str, ...] = ()
    token: str | None = None
    secret_key: str | None = None  # development clinic only: signs Access Manager grants
    presence_timeout_seconds: int = 120
    reconnect_min_seconds: float = 0.5
    reconnect_max_seconds: float = 5.0
    request_timeout_seconds: float = 10.0
    subscribe_timeout_seconds: float = 310.0
    # While a connection fault lasts, it is logged again at this interval (its start and end always).
    fault_log_interval_seconds: float = 60.0
    # The HTTPS proxy and the CA bundle (telehealth_client/outbound.py); the default: direct.
    outbound: Outbound = field(default_factory=Outbound)
    # The proxy refusing proxy_authorization (407) is tried again this far apart, not at the back-off's
    # pace: each attempt sends the password again, and a directory may lock the account.
    proxy_refused_retry_seconds: float = PROXY_REFUSED_RETRY_SECONDS


@dataclass(frozen=True)
class _Sdk:
    """The SDK's heavy parts: its client and configuration, and our crypto module on its own."""

    configuration: type[PNConfiguration]
    client: type[PubNubAsyncio]
    crypto_module: type[RotatingCryptoModule]
    encrypted_size: Callable[[int], int]


@functools.cache
def _sdk() -> _Sdk:
    """Imported here, when a bus is first used (a cart's bring-up, after READY; a kiosk's first
    check-in), not at import: PubNubAsyncio (httpx, its event engine) and the SDK's crypto
    (PyCryptodome) cost an idle kiosk ~7 MB and a tenth of a second of its start. On the event
    loop, once: an import in a thread could meet the loop's own imports of the same modules."""
    from pubnub.pnconfiguration import PNConfiguration
    from pubnub.pubnub_asyncio import PubNubAsyncio

    from telehealth_client.pubsub.crypto import RotatingCryptoModule, encrypted_size

    return _Sdk(PNConfiguration, PubNubAsyncio, RotatingCryptoModule, encrypted_size)


def heartbeat_interval(presence_timeout_seconds: int) -> float:
    """Seconds between heartbeats: two within every presence timeout, a second to spare, never under 5 s."""
    return max(5.0, presence_timeout_seconds / 2 - 1)


def publish_size(channel: str, message: Any, *, encrypted: bool) -> int:
    """Bytes PubNub counts for a POST publish: the body the SDK sends plus the channel name.

    The SDK serialises with ``json.dumps`` defaults (``", "`` separators), so that is what is
    measured; NaN, infinities and nesting beyond the bound are refused with BusError.
    """
    try:
        bounded_json.check_value(message)
        text = json.dumps(message, allow_nan=False)
    except bounded_json.JsonLimitError as exc:
        raise BusError("publish", f"message refused: {exc}", retryable=False) from None
    except (TypeError, ValueError, RecursionError):
        raise BusError("publish", "message is not JSON-serialisable", retryable=False) from None
    body = len(text.encode("utf-8"))
    return (_sdk().encrypted_size(body) if encrypted else body) + len(channel.encode("utf-8"))


class _NoSubscriptionManager:
    """Stands in for the SDK's subscription manager, which this module replaces."""

    def get_custom_params(self) -> dict[str, str]:
        return {}

    def stop(self) -> None:
        pass


def build_pubnub(config: BusConfig) -> PubNubAsyncio:
    """A PubNubAsyncio with our crypto and its own subscribe machinery switched off."""
    sdk = _sdk()
    pn = sdk.configuration()
    pn.user_id = config.user_id
    pn.subscribe_key = config.subscribe_key
    pn.publish_key = config.publish_key
    if config.secret_key:
        pn.secret_key = config.secret_key
    pn.origin = config.origin
    pn.ssl = config.ssl
    pn.enable_subscribe = False
    pn.set_presence_timeout(config.presence_timeout_seconds)
    # The SDK asserts whole seconds.
    pn.non_subscribe_request_timeout = math.ceil(config.request_timeout_seconds)
    pn.connect_timeout = math.ceil(min(config.request_timeout_seconds, 10.0))
    pn.subscribe_request_timeout = math.ceil(config.subscribe_timeout_seconds)
    pn.log_verbosity = False
    if config.cipher_key:
        pn.cipher_key = config.cipher_key
        pn.crypto_module = sdk.crypto_module(config.cipher_key, config.previous_cipher_keys)
    # The SDK's aiohttp transport, not its default httpx one: measured here, httpx costs
    # about 3 ms more per request, which is most of a signaling message's latency.
    pubnub = sdk.client(pn, custom_request_handler=routed_handler(config.outbound, config.origin, config.ssl))
    # With subscribe disabled the SDK leaves no manager, yet its Subscribe endpoint still
    # asks one for extra query parameters: give it one that has none.
    pubnub._subscription_manager = _NoSubscriptionManager()
    if config.token:
        pubnub.set_token(config.token)
    return pubnub


async def _sdk_call(request: Any) -> Any:
    """Run an SDK request and return its envelope, letting our own cancellation through.

    The SDK turns a CancelledError into an error envelope; awaited directly, a cancelled
    publish would look like a network failure and a cancelled task would keep running.
    """
    inner = asyncio.ensure_future(request.future())
    try:
        return await asyncio.shield(inner)
    except asyncio.CancelledError:
        inner.cancel()
        raise


async def _wait_at_most(event: asyncio.Event, seconds: float) -> None:
    """Until ``event`` is set or ``seconds`` pass, whichever is first.

    Not ``asyncio.wait_for``: on Python 3.11 it swallows a cancellation that arrives just as the
    event is set, and the loop it belongs to would outlive the bus's close.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


def _failure(operation: str, envelope: Any) -> BusError:
    status = getattr(envelope, "status", None)
    code = getattr(status, "status_code", None)
    category = getattr(status, "category", None)
    if code == 403 or category == PNStatusCategory.PNAccessDeniedCategory:
        return AccessDeniedError(operation)
    if code is not None and 400 <= code < 500 and code not in (408, 429):
        return BusError(operation, "request refused", status_code=code, retryable=False)
    retry_after = None
    if category == PNStatusCategory.PNTimeoutCategory:
        reason = "timed out"
    elif code is None:
        # No answer: what the transport said (DNS lookup failed for HOST, connection refused, the
        # proxy's refusal, an untrusted certificate), so the status says what to fix.
        exc = getattr(getattr(status, "error_data", None), "exception", None)
        cause = classify_exception(exc) if isinstance(exc, BaseException) else None
        reason = cause or "network or server error"
        if credentials_refused(cause):
            retry_after = PROXY_REFUSED_RETRY_SECONDS
    else:
        reason = "network or server error"
    return BusError(operation, reason, status_code=code, retryable=True, retry_after=retry_after)


def _brings(subscription: Subscription, channel: str) -> bool:
    """Whether what arrives on ``channel`` (a concrete name, from the answer's ``c``) is for it."""
    if channel in subscription.channels:
        return True
    return any(matches(name, channel) for name in subscription.channels if is_wildcard(name))


class PubNubBus:
    """The agent's bus: publish, subscribe (own loop), history, user metadata, token."""

    def __init__(self, config: BusConfig, *, pubnub: PubNubAsyncio | None = None) -> None:
        self._config = config
        # The SDK's client: made when the bus is first used (an idle kiosk's never is, see _sdk).
        self._client: PubNubAsyncio | None = pubnub
        self._subscriptions: list[Subscription] = []
        self._status = ConnectionStatus.IDLE
        self._status_listeners: list[StatusHandler] = []
        self._retry_listeners: list[StatusHandler] = []
        self._changed = asyncio.Event()
        self._timetoken = 0
        self._region = 0
        self._seen: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._deliveries: asyncio.Queue[tuple[Envelope | PresenceEvent, list[Subscription]]] = asyncio.Queue(
            _DELIVERY_QUEUE_LIMIT
        )
        self._subscribe_task: asyncio.Task[None] | None = None
        self._dispatch_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._heartbeat_now = asyncio.Event()
        self._faults = FaultReporter(config.origin, repeat_seconds=config.fault_log_interval_seconds)
        self._token_changed = False
        self._token_generation = 0  # set_token's count: which token a refused publish carried
        self._closed = False

    # -- state ---------------------------------------------------------------------------------

    @property
    def user_id(self) -> str:
        return self._config.user_id

    @property
    def status(self) -> ConnectionStatus:
        return self._status

    def publish_size(self, channel: str, message: Any) -> int:
        return publish_size(channel, message, encrypted=self._crypto is not None)

    @property
    def timetoken(self) -> int:
        """The cursor the next subscribe continues from (0 before the first answer)."""
        return self._timetoken

    @property
    def pubnub(self) -> PubNubAsyncio:
        return self._pubnub

    @property
    def _pubnub(self) -> PubNubAsyncio:
        if self._client is None:
            self._client = build_pubnub(self._config)
        return self._client

    @property
    def _crypto(self) -> RotatingCryptoModule | None:
        crypto: RotatingCryptoModule | None = self._pubnub.config.crypto_module
        return crypto

    def add_status_listener(self, listener: StatusHandler) -> Callable[[], None]:
        self._status_listeners.append(listener)
        return lambda: self._status_listeners.remove(listener)

    def add_retry_listener(self, listener: StatusHandler) -> Callable[[], None]:
        """``listener(change)`` after every failed subscribe attempt (``failures``, ``retry_in``),
        also while the status stays the same: status listeners hear changes only."""
        self._retry_listeners.append(listener)
        return lambda: self._retry_listeners.remove(listener)

    def _announce(self, change: StatusChange, *, again: bool = False) -> None:
        # Announced only when the status itself changes, like aiortc's connection states;
        # ``again``: the same status is news (a new token refused like the old one).
        if change.status == self._status and not again:
            return
        if self._status == ConnectionStatus.FAILED and change.status != ConnectionStatus.STOPPED:
            return  # a loop has ended: whatever the others see, nothing is delivered any more
        self._status = change.status
        log.info("bus status=%s reason=%s failures=%d", change.status, change.reason, change.failures)
        for listener in list(self._status_listeners):
            try:
                listener(change)
            except Exception as exc:
                log.error("bus status listener failed error=%s", describe_exception(exc))

    @property
    def token_generation(self) -> int:
        return self._token_generation

    def set_token(self, token: str | None) -> None:
        self._pubnub.set_token(token)
        self._token_generation += 1
        # The next poll's refusal, if any, is about this token: it is announced even when the
        # status already says access-denied (the token keeper waits for that verdict).
        self._token_changed = True
        # A new token may unlock a subscribe that was refused: try again now, not after back-off.
        self._changed.set()

    # -- publish, history, metadata ------------------------------------------------------------

    async def publish(
        self, channel: str, message: Any, *, store: bool = True, meta: Mapping[str, Any] | None = None
    ) -> PublishResult:
        size = publish_size(channel, message, encrypted=self._crypto is not None)
        if meta is not None:
            try:
                bounded_json.check_value(meta)
                json.dumps(meta, allow_nan=False)
            except bounded_json.JsonLimitError as exc:
                raise BusError("publish", f"meta refused: {exc}", retryable=False) from None
            except (TypeError, ValueError, RecursionError):
                raise BusError("publish", "meta is not JSON-serialisable", retryable=False) from None
        if size > MAX_MESSAGE_BYTES:
            raise BusError("publish", f"message is {size} bytes, over {MAX_MESSAGE_BYTES}", retryable=False)
        request = self._pubnub.publish().channel(channel).message(message).should_store(store).use_post(True)
        if meta is not None:
            request = request.meta(dict(meta))
        generation = self._token_generation
        envelope = await _sdk_call(request)
        if envelope.is_error():
            error = _failure("publish", envelope)
            if isinstance(error, AccessDeniedError):
                # A refresh may have put a newer token on the bus while this publish was in flight.
                error.token_generation = generation
            raise error
        return PublishResult(timetoken=int(envelope.result.timetoken))

    async def history(self, channel: str, *, since: int | None = None, limit: int = 100) -> list[Envelope]:
        """Stored messages on ``channel``, oldest first, at most ``limit``.

        With ``since``: the oldest ``limit`` messages strictly newer than it, paging forward
        (a catch-up reads on from where it stopped). Without: the newest ``limit``, paging back.
        """
        collected: list[Envelope] = []
        # PubNub's ranges: `start` is exclusive, `end` inclusive. With only `end` a page holds the
        # oldest messages from there on; otherwise the newest before `start`.
        start: int | None = None
        end: int | None = since + 1 if since is not None else None
        while len(collected) < limit:
            page_size = min(100, limit - len(collected))
            items = await self._history_page(channel, page_size, start=start, end=end)
            page = [env for env in (self._history_item(channel, item) for item in items) if env is not None]
            collected.extend(page)
            if len(items) < page_size:
                break
            timetokens = [env.timetoken for env in page]
            if not timetokens:
                break  # a full page with no usable timetoken: nothing to page from
            if since is not None:
                end = max(timetokens) + 1
            else:
                start = min(timetokens)
        # Page sizes never add up past `limit`; only the order needs fixing.
        collected.sort(key=lambda env: env.timetoken)
        return collected

    async def _history_page(
        self, channel: str, size: int, *, start: int | None, end: int | None
    ) -> list[Any]:
        request = (
            self._pubnub.fetch_messages()
            .channels([channel])
            .maximum_per_channel(size)
            .include_meta(True)
            .include_uuid(True)
            # Decrypted here, not by the SDK: one undecryptable stored message makes the
            # SDK fail the whole page, which would block every catch-up on the channel.
            .decrypt_messages(False)
        )
        if start is not None:
            request = request.start(start)
        if end is not None:
            request = request.end(end)
        envelope = await _sdk_call(request)
        if envelope.is_error():
            raise _failure("history", envelope)
        return list(envelope.result.channels.get(channel, [])) if envelope.result else []

    def _history_item(self, channel: str, item: Any) -> Envelope | None:
        decoded = decode_history_item(
            channel,
            getattr(item, "message", None),
            getattr(item, "timetoken", None),
            getattr(item, "uuid", None),
            getattr(item, "meta", None),
            self._crypto,
        )
        if isinstance(decoded, Dropped):
            log.warning("history message dropped channel=%s reason=%s", channel, decoded.reason)
            return None
        return decoded

    async def here_now(self, channels: Iterable[str]) -> dict[str, frozenset[str]]:
        wanted = sorted(set(channels))
        present: dict[str, frozenset[str]] = {channel: frozenset() for channel in wanted}
        for first in range(0, len(wanted), HERE_NOW_CHANNELS_PER_REQUEST):
            chunk = wanted[first : first + HERE_NOW_CHANNELS_PER_REQUEST]
            request = self._pubnub.here_now().channels(chunk).include_uuids(True).include_state(False)
            envelope = await _sdk_call(request)
            if envelope.is_error():
                raise _failure("here now", envelope)
            # The SDK answers a list of channels, or an empty dict when nobody is on any of them.
            found = envelope.result.channels if envelope.result is not None else []
            for entry in found if isinstance(found, list) else []:
                if entry.channel_name in present:
                    present[entry.channel_name] = frozenset(
                        occupant.uuid for occupant in entry.occupants if isinstance(occupant.uuid, str)
                    )
        return present

    async def get_user_metadata(self, user_id: str) -> dict[str, Any]:
        """The user's App Context ``custom`` fields; empty when the user has none."""
        envelope = await _sdk_call(self._pubnub.get_uuid_metadata(uuid=user_id, include_custom=True))
        if envelope.is_error():
            if getattr(envelope.status, "status_code", None) == 404:
                return {}
            raise _failure("get user metadata", envelope)
        data = envelope.result.data or {}
        custom = data.get("custom") if isinstance(data, Mapping) else None
        return dict(custom) if isinstance(custom, Mapping) else {}

    async def set_user_metadata(self, user_id: str, custom: Mapping[str, Any]) -> None:
        request = self._pubnub.set_uuid_metadata(uuid=user_id, custom=dict(custom), include_custom=True)
        envelope = await _sdk_call(request)
        if envelope.is_error():
            raise _failure("set user metadata", envelope)

    # -- subscribe -----------------------------------------------------------------------------

    async def subscribe(
        self,
        channels: Iterable[str],
        on_message: MessageHandler | None = None,
        *,
        on_presence: PresenceHandler | None = None,
        with_presence: bool = False,
        covered: bool = False,
    ) -> Subscription:
        if self._closed:
            raise BusError("subscribe", "the bus is closed", retryable=False)
        wanted = frozenset(channels)
        if not wanted:
            raise ValueError("channels: at least one channel is required")
        presence = with_presence or on_presence is not None
        if covered:
            self._check_covered(wanted, presence=presence)
        else:
            listed = self._subscribed_channels(presence=True) | wanted
            if presence:
                listed |= {presence_channel(channel) for channel in wanted}
            if len(listed) > MAX_CHANNELS_PER_SUBSCRIBE:
                # PubNub would refuse every long-poll: the bus would only ever say "reconnecting".
                raise BusError(
                    "subscribe",
                    f"channels: {len(listed)} channels (presence channels included) exceed PubNub's"
                    f" limit of {MAX_CHANNELS_PER_SUBSCRIBE} in one subscribe request",
                    retryable=False,
                )
        subscription = Subscription(
            channels=wanted,
            on_message=on_message,
            on_presence=on_presence,
            with_presence=presence,
            _closer=self._unsubscribe,
            covered=covered,
        )
        self._subscriptions.append(subscription)
        self._ensure_tasks()
        if not covered:
            self._changed.set()  # a covered subscription changes nothing in the request
        return subscription

    def _check_covered(self, wanted: frozenset[str], *, presence: bool) -> None:
        """BusError unless an open wildcard subscription brings every channel (and its presence):
        a covered subscription that nothing brings would wait forever without a word."""
        wildcards = [name for name in self._subscribed_channels(presence=True) if is_wildcard(name)]
        names = set(wanted)
        if presence:
            names |= {presence_channel(channel) for channel in wanted}
        missing = [name for name in names if not any(matches(w, name) for w in wildcards)]
        if missing:
            raise BusError(
                "subscribe",
                f"channels: {len(missing)} of the channels (presence channels included) are not"
                " brought by an open wildcard subscription",
                retryable=False,
            )

    async def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription not in self._subscriptions:
            return
        before = self._subscribed_channels(presence=False)
        self._subscriptions.remove(subscription)
        gone = before - self._subscribed_channels(presence=False)
        self._changed.set()
        if gone:
            envelope = await _sdk_call(Leave(self._pubnub).channels(sorted(gone)))
            if envelope.is_error():
                log.info("leave not delivered channels=%d", len(gone))

    def _subscribed_channels(self, *, presence: bool) -> set[str]:
        """The channels listed in the subscribe request (covered subscriptions list none)."""
        names: set[str] = set()
        for sub in self._subscriptions:
            if sub.covered:
                continue
            names |= sub.channels
            if presence and sub.with_presence:
                names |= {presence_channel(channel) for channel in sub.channels}
        return names

    def _ensure_tasks(self) -> None:
        if self._subscribe_task is None:
            self._subscribe_task = self._start_loop(self._subscribe_loop(), "bus-subscribe")
            self._dispatch_task = self._start_loop(self._dispatch_loop(), "bus-dispatch")
            self._heartbeat_task = self._start_loop(self._heartbeat_loop(), "bus-heartbeat")

    def _start_loop(self, loop: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = asyncio.create_task(loop, name=name)
        task.add_done_callback(self._loop_ended)
        return task

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        # The loops never return and catch what one entry can throw; if one ends anyway the
        # bus must not go on claiming "connected".
        if self._closed:
            return
        if task.cancelled():
            why = "cancelled"
        else:
            exc = task.exception()
            why = describe_exception(exc) if exc is not None else "returned"
        reason = f"{task.get_name()} ended: {why}"
        log.error("bus loop ended loop=%s reason=%s", task.get_name(), why)
        self._announce(StatusChange(ConnectionStatus.FAILED, reason=reason))

    async def _subscribe_loop(self) -> None:
        failures = 0
        while True:
            try:
                failures = await self._subscribe_step(failures)
            except Exception as exc:
                # Our own bug, not the network's: logged by type and place, then retried like a failure.
                failures += 1
                log.error("bus subscribe step failed error=%s", describe_exception(exc))
                self._announce(
                    StatusChange(ConnectionStatus.RECONNECTING, reason="internal error", failures=failures)
                )
                await self._back_off(failures)

    async def _subscribe_step(self, failures: int) -> int:
        """One request of the subscribe loop; returns the consecutive failure count after it."""
        channels = sorted(self._subscribed_channels(presence=True))
        self._changed.clear()
        # Taken with the clear: a token set after this point interrupts this poll (or its back-off).
        new_token, self._token_changed = self._token_changed, False
        if not channels:
            # A later subscribe starts from now, as the SDKs do: resuming an old cursor
            # would replay stale messages (an old offer or end-call) as new.
            self._timetoken, self._region = 0, 0
            self._announce(StatusChange(ConnectionStatus.IDLE))
            await self._changed.wait()
            return 0
        if self._status in (ConnectionStatus.IDLE, ConnectionStatus.STOPPED):
            self._announce(StatusChange(ConnectionStatus.CONNECTING))
        # After a failure the resumed long-poll would answer only when a message arrives (up
        # to 280 s on a quiet channel): a handshake (tt=0) says at once whether the origin
        # answers again, and the cursor is kept, so nothing published meanwhile is lost.
        handshake = self._status != ConnectionStatus.CONNECTED and self._timetoken != 0
        try:
            envelope = await self._poll(channels, handshake=handshake)
        except Exception as exc:  # the SDK raising instead of answering: a failed poll
            return await self._failed(failures + 1, None, classify_exception(exc) or type(exc).__name__)
        if envelope is None:
            return failures  # the channel set changed: ask again with the same cursor
        if envelope.is_error():
            error = _failure("subscribe", envelope)
            return await self._failed(failures + 1, error, classify(envelope), new_token=new_token)
        answer = None
        if not handshake:
            try:
                answer = parse_subscribe_answer(envelope.result, self._crypto)
            except MalformedAnswerError as exc:
                return await self._failed(
                    failures + 1, BusError("subscribe", str(exc), retryable=True), "malformed answer"
                )
        self._faults.succeeded()
        if self._status != ConnectionStatus.CONNECTED:
            resumed = self._timetoken or None
            self._announce(StatusChange(ConnectionStatus.CONNECTED, caught_up_from=resumed))
            self._heartbeat_now.set()  # presence may have lapsed during the outage
        if answer is not None:
            await self._accept(answer.entries)
            self._timetoken, self._region = answer.timetoken, answer.region
        return 0

    async def _failed(
        self, failures: int, error: BusError | None, kind: str, *, new_token: bool = False
    ) -> int:
        denied = isinstance(error, AccessDeniedError)
        if denied:
            self._faults.succeeded()  # the origin answered: a token problem, not a connection fault
        else:
            self._faults.failed(kind)
        status = ConnectionStatus.ACCESS_DENIED if denied else ConnectionStatus.RECONNECTING
        reason = error.reason if error is not None and not is_route_fault(kind) else kind
        log.debug("bus subscribe failed failures=%d error=%s", failures, kind)
        if credentials_refused(kind):
            delay = self._config.proxy_refused_retry_seconds
        else:
            delay = self._back_off_delay(failures)
        change = StatusChange(status, reason=reason, failures=failures, retry_in=delay)
        self._announce(change, again=denied and new_token)
        for listener in list(self._retry_listeners):
            try:
                listener(change)
            except Exception as exc:
                log.error("bus retry listener failed error=%s", describe_exception(exc))
        await _wait_at_most(self._changed, delay)  # a new token or channel set cuts the wait short
        return failures

    async def _poll(self, channels: list[str], *, handshake: bool = False) -> Any | None:
        """One long-poll (or handshake); None when the channel set changed before it answered."""
        request = Subscribe(self._pubnub).channels(channels).timetoken(0 if handshake else self._timetoken)
        if self._region and not handshake:
            request = request.region(self._region)
        poll = asyncio.ensure_future(request.future())
        changed = asyncio.ensure_future(self._changed.wait())
        interrupted = False
        try:
            await asyncio.wait({poll, changed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            if not poll.done():
                interrupted = True
                poll.cancel()
            await asyncio.gather(poll, changed, return_exceptions=True)
        if interrupted or poll.cancelled():
            return None
        return poll.result()

    def _back_off_delay(self, failures: int) -> float:
        config = self._config
        return back_off_delay(failures, config.reconnect_min_seconds, config.reconnect_max_seconds)

    async def _back_off(self, failures: int) -> None:
        # A new token or channel set cuts the wait short.
        await _wait_at_most(self._changed, self._back_off_delay(failures))

    async def _accept(self, entries: list[Envelope | PresenceEvent | Dropped]) -> None:
        for entry in entries:
            try:
                await self._accept_one(entry)
            except Exception as exc:  # one entry must not stop the rest
                log.error("bus entry dropped error=%s", describe_exception(exc))

    async def _accept_one(self, entry: Envelope | PresenceEvent | Dropped) -> None:
        if isinstance(entry, Dropped):
            if entry.ignorable:
                log.debug("bus event ignored channel=%s reason=%s", entry.channel, entry.reason)
            else:
                log.warning("bus message dropped channel=%s reason=%s", entry.channel, entry.reason)
            return
        key = (entry.channel + ("-pnpres" if isinstance(entry, PresenceEvent) else ""), entry.timetoken)
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        targets = [sub for sub in self._subscriptions if _brings(sub, entry.channel)]
        if targets:
            await self._deliveries.put((entry, targets))

    async def _dispatch_loop(self) -> None:
        # One consumer keeps handlers in arrival order and off the long-poll's path.
        while True:
            entry, targets = await self._deliveries.get()
            for sub in targets:
                await self._deliver(entry, sub)

    async def _deliver(self, entry: Envelope | PresenceEvent, sub: Subscription) -> None:
        handler: MessageHandler | PresenceHandler | None
        handler = sub.on_presence if isinstance(entry, PresenceEvent) else sub.on_message
        if handler is None or sub not in self._subscriptions:
            return  # closed since the entry was queued
        try:
            result = handler(entry)  # type: ignore[arg-type]
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being stopped
            # A handler awaited something cancelled elsewhere: that must not stop delivery.
            log.error("bus handler cancelled channel=%s error=%s", entry.channel, describe_exception(exc))
        except Exception as exc:
            # Type, place and our own reason text only: a foreign message may repeat what the
            # handler was reading.
            log.error(
                "bus handler failed channel=%s error=%s reason=%s",
                entry.channel,
                describe_exception(exc),
                exception_reason(exc),
            )

    async def _heartbeat_loop(self) -> None:
        # The long-poll alone can outlast the presence timeout; heartbeats keep us present.
        # They are sent whatever the status says: the origin may answer them before the long-poll.
        interval = heartbeat_interval(self._config.presence_timeout_seconds)
        while True:
            await _wait_at_most(self._heartbeat_now, interval)
            self._heartbeat_now.clear()
            channels = sorted(self._subscribed_channels(presence=False))
            if not channels or credentials_refused(self._faults.kind):
                continue  # nobody to be present for; or the proxy would only refuse the password again
            try:
                envelope = await _sdk_call(Heartbeat(self._pubnub).channels(channels))
                if envelope.is_error():
                    log.info("heartbeat failed error=%s", classify(envelope))
            except Exception as exc:
                log.error("heartbeat raised error=%s", describe_exception(exc))

    # -- shutdown ------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Leave every channel, stop the loops and close the HTTP session. Idempotent."""
        if self._closed:
            return
        self._closed = True
        channels = sorted(self._subscribed_channels(presence=False))
        tasks = [t for t in (self._subscribe_task, self._dispatch_task, self._heartbeat_task) if t]
        for task in tasks:
            task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=_STOP_TIMEOUT_SECONDS) if tasks else (set(), set())
        if stuck:
            log.error("bus tasks did not stop in time count=%d", len(stuck))
        self._subscriptions.clear()
        if channels:
            with contextlib.suppress(Exception):
                # Never past a stop's deadline: the presence timeout tells the peers anyway.
                await asyncio.wait_for(_sdk_call(Leave(self._pubnub).channels(channels)), budget(2.0))
        self._announce(StatusChange(ConnectionStatus.STOPPED))
        if self._client is not None:  # never used: there is no session to close
            await self._client.stop()
