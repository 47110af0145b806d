"""The agent's Access Manager token: fetched from the clinic backend, kept fresh, applied to the bus.

A PubNub client holds one token at a time (PROTOCOL.md, "Token permissions by role"). A
``TokenKeeper`` owns that one token for one identity:

- ``start()`` asks the clinic for it and hands it to the bus. A new token reaches the bus's
  long-poll on its next request (the bus re-polls from the same cursor at once), so a refresh
  never interrupts a subscription;
- it refreshes at ``refresh_ratio`` (80 %) of the TTL after the grant arrived, up to
  ``jitter_ratio`` of that earlier at random, so kiosks started together do not ask together;
  a failed refresh is retried with capped, jittered back-off until one succeeds;
- while refresh keeps failing it says ``expiring`` ``min(5 minutes, 20 % of the TTL)`` before
  expiry (with a 1-minute TTL, 5 minutes would be before the token was even granted), and
  ``expired`` once it has;
- on a 403 from the bus (its status turning access-denied, or a publish reported through
  ``handle_access_denied``) it refreshes once, at once. If the bus is still refused with the new
  token, it says ``access-denied`` and refreshes no more for it: a revoked consultation or a
  channel outside the grant is not cured by asking again;
- only a verdict ends anything: the clinic's own refusal (HTTP 403 from the token server, on a
  scheduled refresh or after a 403) or the bus refusing a token issued in answer to its 403. A
  clinic that cannot be reached (no answer, a time-out, 5xx) is not a verdict, however long it
  lasts: each failed attempt says ``refresh-failed`` (the user is told access is being renewed),
  the refresh is retried with back-off, and a publish refused meanwhile waits in
  ``handle_access_denied`` for the next token. A 403 on a token that has merely expired (its life
  is over by this side's clock) is a reason to refresh, never a verdict on its own.

Expiry is counted from when the request was sent, so this side never believes a token lives
longer than the server made it. The token and the device credential are never logged, nor put
in an event; logs name the user ID, the role, the TTL and outcomes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from telehealth_client.backoff import back_off_delay
from telehealth_client.logs import describe_exception
from telehealth_client.protocol.channels import ConsultationChannels, InvalidIdError, validate_id
from telehealth_client.pubsub.bus import AccessDeniedError, Bus, ConnectionStatus, StatusChange
from telehealth_client.security.clinic_client import ClinicError, TokenGrant

log = logging.getLogger(__name__)

TOKEN_ROLES = ("patient", "provider", "nurse")
# What the clinic's token endpoint reads besides userId and role (PROTOCOL.md, "Clinic backend").
CONTEXT_FIELDS = ("appointmentId", "consultationChannel", "providerId", "departmentId")

# What was refused: the bus's subscribe or a publish (PubNub's 403), or a refresh (the clinic's).
DenialSource = Literal["subscribe", "publish", "refresh"]


# -- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenGranted:
    """The first token is on the bus."""

    user_id: str
    role: str
    ttl_minutes: int
    kind: Literal["granted"] = field(default="granted", init=False)


@dataclass(frozen=True)
class TokenRefreshed:
    """A new token replaced the old one; ``reason``: on schedule, or after a 403."""

    user_id: str
    role: str
    ttl_minutes: int
    reason: Literal["scheduled", "access-denied"]
    kind: Literal["refreshed"] = field(default="refreshed", init=False)


@dataclass(frozen=True)
class TokenExpiring:
    """Refresh keeps failing and the token expires in ``seconds_left``."""

    user_id: str
    role: str
    seconds_left: float
    failures: int
    kind: Literal["expiring"] = field(default="expiring", init=False)


@dataclass(frozen=True)
class TokenRefreshFailed:
    """The first of a streak of refreshes that could not reach the clinic (or failed without a
    verdict): retried in ``retry_in_seconds`` and on; ``expired``: the current token's life is
    already over. The streak ends with ``TokenRefreshed`` or a verdict."""

    user_id: str
    role: str
    failures: int
    retry_in_seconds: float
    expired: bool
    kind: Literal["refresh-failed"] = field(default="refresh-failed", init=False)


@dataclass(frozen=True)
class TokenExpired:
    """The token has expired and no new one could be had: the bus is refused until one is."""

    user_id: str
    role: str
    failures: int
    kind: Literal["expired"] = field(default="expired", init=False)


@dataclass(frozen=True)
class TokenAccessDenied:
    """A verdict: the bus is refused even after a refresh, or the clinic refused a new token
    (``source`` ``refresh``; ``consent_withdrawn`` when it refused for the patient's consent)."""

    user_id: str
    role: str
    source: DenialSource
    reason: str
    consent_withdrawn: bool = False
    kind: Literal["access-denied"] = field(default="access-denied", init=False)


TokenEvent = (
    TokenGranted | TokenRefreshed | TokenExpiring | TokenRefreshFailed | TokenExpired | TokenAccessDenied
)


# -- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRequest:
    """Who asks for the token and for what: the clinic's token request, checked before it is sent."""

    user_id: str
    role: str
    context: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_id(self.user_id, "userId")
        if self.role not in TOKEN_ROLES:
            raise ValueError(f"role: must be one of {', '.join(TOKEN_ROLES)}")
        for name, value in self.context.items():
            if name not in CONTEXT_FIELDS:
                raise ValueError(
                    f"context: {name[:64]!r} is not a token request field ({', '.join(CONTEXT_FIELDS)})"
                )
            if name == "consultationChannel":
                try:
                    ConsultationChannels.parse(value)
                except InvalidIdError as exc:
                    raise InvalidIdError("consultationChannel", f"{exc.field}: {exc.reason}") from None
            else:
                validate_id(value, name)
        object.__setattr__(
            self, "context", dict(self.context)
        )  # a copy: later changes to the caller's do nothing


@dataclass(frozen=True)
class RefreshPolicy:
    """When to refresh, retry, warn and give up on a 403. Seconds unless the name says otherwise."""

    refresh_ratio: float = 0.8
    # The refresh comes up to this share of ``refresh_ratio * TTL`` earlier, at random.
    jitter_ratio: float = 0.05
    warning_lead_seconds: float = 300.0
    # Short TTLs: the warning comes at most this share of the TTL before expiry.
    warning_lead_ratio: float = 0.2
    retry_min_seconds: float = 1.0
    retry_max_seconds: float = 60.0
    # Once the token has run out nothing can be published until a new one comes: retries are at
    # most this far apart, so access returns within seconds of the clinic.
    retry_max_expired_seconds: float = 10.0
    # After the one refresh a refused subscription gets: how long the bus has to connect with it.
    # A backstop: the bus announces access-denied again when the new token is refused too, and
    # that announcement brings the verdict at once.
    denial_grace_seconds: float = 30.0

    def __post_init__(self) -> None:
        for name in ("refresh_ratio", "warning_lead_ratio"):
            _check(name, getattr(self, name), lambda v: 0 < v < 1, "a number above 0 and below 1")
        _check("jitter_ratio", self.jitter_ratio, lambda v: 0 <= v < 1, "a number from 0 to below 1")
        for name in (
            "warning_lead_seconds",
            "retry_min_seconds",
            "retry_max_seconds",
            "retry_max_expired_seconds",
            "denial_grace_seconds",
        ):
            _check(name, getattr(self, name), lambda v: 0 < v < math.inf, "a positive number of seconds")
        if self.retry_max_seconds < self.retry_min_seconds:
            raise ValueError("retry_max_seconds: must not be below retry_min_seconds")


def _check(name: str, value: object, within: Callable[[float], bool], what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not within(value):
        raise ValueError(f"{name}: must be {what}")


@dataclass(frozen=True)
class TokenSchedule:
    """The moments of one token's life, on the keeper's clock."""

    refresh_at: float
    warn_at: float
    expires_at: float


def plan(
    policy: RefreshPolicy, *, requested_at: float, received_at: float, ttl_minutes: int, jitter: float
) -> TokenSchedule:
    """When to refresh, warn and consider expired a token of ``ttl_minutes``; ``jitter`` in [0, 1)."""
    ttl = ttl_minutes * 60.0
    refresh_in = ttl * policy.refresh_ratio * (1.0 - policy.jitter_ratio * jitter)
    expires_at = requested_at + ttl
    lead = min(policy.warning_lead_seconds, policy.warning_lead_ratio * ttl)
    return TokenSchedule(
        refresh_at=received_at + refresh_in, warn_at=expires_at - lead, expires_at=expires_at
    )


# -- the keeper ------------------------------------------------------------------------------------


def _clinic_verdict(exc: Exception) -> bool:
    """The clinic refused (its 403), as opposed to not answering or failing (retried)."""
    return isinstance(exc, ClinicError) and exc.refused


class TokenSource(Protocol):
    """Where tokens come from: ``ClinicClient`` in the agent."""

    async def request_token(self, user_id: str, role: str, **context: str) -> TokenGrant: ...


class KeeperClock(Protocol):
    """The keeper's time, in seconds; injectable so tests move it instead of waiting."""

    def now(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class LoopClock:
    """The event loop's monotonic clock: a wall-clock jump moves no refresh."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - self.now()))


# Where a 403 episode stands for the current token: no refresh for it yet, refreshed once, or
# reported as access-denied (nothing more until the bus connects again or the token is replaced).
_Episode = Literal["none", "refreshed", "reported"]


class TokenKeeper:
    """Owns one identity's token: ``await start()`` fetches and applies it, ``aclose()`` stops."""

    def __init__(
        self,
        source: TokenSource,
        bus: Bus,
        request: TokenRequest,
        on_event: Callable[[TokenEvent], None],
        *,
        policy: RefreshPolicy | None = None,
        clock: KeeperClock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._source = source
        self._bus = bus
        self._request = request
        self._on_event = on_event
        self._policy = policy or RefreshPolicy()
        self._clock = clock or LoopClock()
        self._rng = rng or random.Random()
        self._schedule: TokenSchedule | None = None
        self._ttl_minutes = 0
        self._channel_config: dict[str, object] = {}
        self._next_attempt = math.inf
        self._failures = 0
        self._warned = False
        self._expired = False
        self._episode: _Episode = "none"
        self._verdict_at: float | None = None  # when a refused subscription's grace after the refresh ends
        self._pending_denial: DenialSource | None = None
        # A 403 whose refresh could not reach the clinic: it waits for the next token fetched.
        self._awaiting_token: DenialSource | None = None
        self._denial_waiters: list[asyncio.Future[bool]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._closed = False

    @property
    def channel_config(self) -> Mapping[str, object]:
        """The channels the clinic named with the current token (``channelConfig``)."""
        return dict(self._channel_config)

    @property
    def ttl_minutes(self) -> int:
        return self._ttl_minutes

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Fetch the first token and apply it, then keep it fresh in the background.

        A refusal or an unreachable clinic raises ClinicError and leaves nothing running: the
        caller (a check-in) fails with the clinic's reason instead of waiting on a refused bus.
        """
        if self._task is not None or self._closed:
            raise RuntimeError("TokenKeeper: start() may be called once, before aclose()")
        requested_at = self._clock.now()
        grant = await self._source.request_token(
            self._request.user_id, self._request.role, **self._request.context
        )
        self._apply(grant, requested_at)
        self._remove_listener = self._bus.add_status_listener(self._on_bus_status)
        self._task = asyncio.create_task(self._run(), name=f"token-keeper-{self._request.user_id}")
        log.info(
            "token granted user=%s role=%s ttl_minutes=%d",
            self._request.user_id,
            self._request.role,
            grant.ttl_minutes,
        )
        self._emit(TokenGranted(self._request.user_id, self._request.role, grant.ttl_minutes))

    def retire(self) -> None:
        """Stop reacting at once, from synchronous code: the token is known to be going away (an
        invited provider just read its own removal, and the revoke follows). No refresh, no 403
        handling, no events from now on; ``aclose()`` still has to be awaited."""
        self._closed = True
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self._task is not None:
            self._task.cancel()

    async def aclose(self) -> None:
        """Stop refreshing; the bus keeps the last token until its owner closes it. Idempotent."""
        self.retire()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # wait(), not await task: a cancellation of aclose() itself must still propagate.
            await asyncio.wait({task})
        self._settle_denial_waiters(False)

    # -- 403 --------------------------------------------------------------------------------------

    async def handle_access_denied(self, error: AccessDeniedError) -> bool:
        """Report a 403 the caller got (a publish). True: a new token is on the bus, try once more;
        False: still refused after a refresh (an ``access-denied`` event has been emitted).
        """
        if self._closed or self._task is None:
            return False
        if error.token_generation is not None and error.token_generation < self._bus.token_generation:
            # Sent with a token that a refresh has replaced since (its 403 came back after the
            # refresh): not a verdict on the current token, which the caller should try.
            log.info(
                "token denied by the bus user=%s operation=%s token=replaced since",
                self._request.user_id,
                error.operation,
            )
            return True
        log.info("token denied by the bus user=%s operation=%s", self._request.user_id, error.operation)
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._denial_waiters.append(waiter)
        self._signal_denial("publish")
        return await waiter

    def _on_bus_status(self, change: StatusChange) -> None:
        if change.status is ConnectionStatus.ACCESS_DENIED:
            self._signal_denial("subscribe")
        elif change.status is ConnectionStatus.CONNECTED:
            # The current token works: a later 403 is a new episode and gets its own refresh.
            self._episode, self._verdict_at = "none", None

    def _signal_denial(self, source: DenialSource) -> None:
        if self._pending_denial != "publish":  # a publish waiter needs its answer either way
            self._pending_denial = source
        self._wake.set()

    # -- the background task ----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._until(self._next_deadline())
            self._wake.clear()
            try:
                await self._step()
            except Exception as exc:  # our own bug: logged, and the keeper goes on after a pause
                log.error("token keeper step failed error=%s", describe_exception(exc))
                await self._clock.sleep_until(self._clock.now() + self._policy.retry_min_seconds)

    def _next_deadline(self) -> float:
        assert self._schedule is not None  # set by start() before the task exists
        deadlines = [self._next_attempt]
        if self._failures and not self._warned:
            deadlines.append(self._schedule.warn_at)
        if not self._expired:
            deadlines.append(self._schedule.expires_at)
        if self._verdict_at is not None:
            deadlines.append(self._verdict_at)
        return min(deadlines)

    async def _until(self, deadline: float) -> None:
        """Until ``deadline`` on the keeper's clock or a 403 is reported, whichever comes first."""
        if self._wake.is_set():
            return
        sleeper = asyncio.ensure_future(self._clock.sleep_until(deadline))
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({sleeper, woken}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            woken.cancel()
            await asyncio.gather(sleeper, woken, return_exceptions=True)

    async def _step(self) -> None:
        if self._pending_denial is not None:
            source, self._pending_denial = self._pending_denial, None
            await self._handle_denial(source)
        if self._verdict_at is not None and self._clock.now() >= self._verdict_at:
            self._verdict_at = None
            if self._bus.status is ConnectionStatus.ACCESS_DENIED:
                self._report_denied("subscribe", "still refused after a refresh")
        if self._clock.now() >= self._next_attempt:
            await self._scheduled_refresh()
        self._check_expiry()

    async def _handle_denial(self, source: DenialSource) -> None:
        if self._episode == "reported":
            self._settle_denial_waiters(False)
            return
        if self._episode == "refreshed" and not self._token_expired():
            self._report_denied(source, "still refused after a refresh")
            return
        if self._awaiting_token is not None:
            return  # a refresh for an earlier 403 is being retried: this one waits for its token
        try:
            grant, requested_at = await self._fetch()
        except Exception as exc:
            self._awaiting_token = source  # a verdict below settles it; else the next token does
            self._refresh_failed("after a 403", exc)
            return
        self._refreshed_after_denial(grant, requested_at, source)

    def _refreshed_after_denial(self, grant: TokenGrant, requested_at: float, source: DenialSource) -> None:
        self._apply(grant, requested_at)
        self._episode = "refreshed"
        # Refusals reported while this refresh was under way were of the old token: their waiters
        # are told to try again below; a new token still refused is reported afresh by the bus.
        self._pending_denial = None
        if source == "subscribe":
            self._verdict_at = self._clock.now() + self._policy.denial_grace_seconds
        log.info(
            "token refreshed after a 403 user=%s role=%s ttl_minutes=%d",
            self._request.user_id,
            self._request.role,
            grant.ttl_minutes,
        )
        self._emit(
            TokenRefreshed(self._request.user_id, self._request.role, grant.ttl_minutes, "access-denied")
        )
        self._settle_denial_waiters(True)

    async def _scheduled_refresh(self) -> None:
        try:
            grant, requested_at = await self._fetch()
        except Exception as exc:
            self._refresh_failed("scheduled", exc)
            return
        awaiting, self._awaiting_token = self._awaiting_token, None
        if awaiting is not None:
            self._refreshed_after_denial(grant, requested_at, awaiting)
            return
        self._apply(grant, requested_at)
        self._episode, self._verdict_at = "none", None  # a new token: a later 403 gets its own refresh
        log.info(
            "token refreshed user=%s role=%s ttl_minutes=%d",
            self._request.user_id,
            self._request.role,
            grant.ttl_minutes,
        )
        self._emit(TokenRefreshed(self._request.user_id, self._request.role, grant.ttl_minutes, "scheduled"))

    def _refresh_failed(self, when: str, exc: Exception) -> None:
        """Retry after a back-off. The clinic's refusal is a verdict, said at once (while the current
        token may still let the far end be told); anything else is said to be retried. Retried
        either way: a standing token the clinic grants again later is taken."""
        self._failures += 1
        ceiling = self._policy.retry_max_seconds
        if self._token_expired():
            ceiling = min(ceiling, self._policy.retry_max_expired_seconds)
        delay = back_off_delay(
            self._failures, min(self._policy.retry_min_seconds, ceiling), ceiling, self._rng.uniform
        )
        self._next_attempt = self._clock.now() + delay
        self._log_failure(when, exc, retry_in=delay)
        if self._episode == "reported":
            return
        if _clinic_verdict(exc):
            self._report_denied(self._awaiting_token or "refresh", "the clinic refused a new token", exc)
        elif self._failures == 1:  # once a streak: the user is told until a token arrives
            self._emit(
                TokenRefreshFailed(
                    self._request.user_id, self._request.role, self._failures, delay, self._token_expired()
                )
            )

    def _token_expired(self) -> bool:
        return self._schedule is not None and self._clock.now() >= self._schedule.expires_at

    def _check_expiry(self) -> None:
        assert self._schedule is not None
        now = self._clock.now()
        if self._failures and not self._warned and now >= self._schedule.warn_at:
            self._warned = True
            left = max(0.0, self._schedule.expires_at - now)
            log.warning(
                "token expiring user=%s role=%s seconds_left=%.0f failures=%d",
                self._request.user_id,
                self._request.role,
                left,
                self._failures,
            )
            self._emit(TokenExpiring(self._request.user_id, self._request.role, left, self._failures))
        if not self._expired and now >= self._schedule.expires_at:
            self._expired = True
            # A retry planned far off while the token still worked comes sooner now.
            self._next_attempt = min(self._next_attempt, now + self._policy.retry_max_expired_seconds)
            log.warning(
                "token expired user=%s role=%s failures=%d",
                self._request.user_id,
                self._request.role,
                self._failures,
            )
            self._emit(TokenExpired(self._request.user_id, self._request.role, self._failures))

    # -- helpers ----------------------------------------------------------------------------------

    async def _fetch(self) -> tuple[TokenGrant, float]:
        requested_at = self._clock.now()
        grant = await self._source.request_token(
            self._request.user_id, self._request.role, **self._request.context
        )
        return grant, requested_at

    def _apply(self, grant: TokenGrant, requested_at: float) -> None:
        """Put ``grant`` on the bus and plan its life. No await in here: nothing sees a half-applied token."""
        self._schedule = plan(
            self._policy,
            requested_at=requested_at,
            received_at=self._clock.now(),
            ttl_minutes=grant.ttl_minutes,
            jitter=self._rng.random(),
        )
        self._bus.set_token(grant.token)
        self._ttl_minutes = grant.ttl_minutes
        self._channel_config = dict(grant.channel_config)
        self._next_attempt = self._schedule.refresh_at
        self._failures = 0
        self._warned = False
        self._expired = False

    def _report_denied(self, source: DenialSource, reason: str, refusal: Exception | None = None) -> None:
        self._episode = "reported"
        self._verdict_at = None
        self._awaiting_token = None
        consent = isinstance(refusal, ClinicError) and refusal.consent_refused
        log.warning(
            "token access denied user=%s role=%s source=%s reason=%s",
            self._request.user_id,
            self._request.role,
            source,
            reason + (" (consent)" if consent else ""),
        )
        self._emit(TokenAccessDenied(self._request.user_id, self._request.role, source, reason, consent))
        self._settle_denial_waiters(False)

    def _settle_denial_waiters(self, refreshed: bool) -> None:
        waiters, self._denial_waiters = self._denial_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(refreshed)

    def _log_failure(self, when: str, exc: Exception, *, retry_in: float | None = None) -> None:
        # The status and the type only: a clinic's reason may quote the request.
        status = exc.status if isinstance(exc, ClinicError) else None
        log.warning(
            "token refresh failed user=%s role=%s when=%s status=%s error=%s failures=%d retry_in_seconds=%s",
            self._request.user_id,
            self._request.role,
            when,
            status,
            type(exc).__name__ if isinstance(exc, ClinicError) else describe_exception(exc),
            self._failures,
            "none" if retry_in is None else f"{retry_in:.3f}",
        )

    def _emit(self, event: TokenEvent) -> None:
        try:
            self._on_event(event)
        except Exception as exc:
            log.error("token event listener failed kind=%s error=%s", event.kind, describe_exception(exc))
