"""How an endpoint's start meets the network: once, or with a service's patience.

``ONCE`` (``Once``): each step is tried once and the bus gets ``CONNECT_TIMEOUT_SECONDS`` to
connect; a failure raises (``Agent.start``: tests, the demo, a library user learn at once).

``Patience`` (``telehealth-agent run``): a service must outlive an outage, so each step is tried
until it succeeds. The clinic backend unreachable, timing out or failing (5xx, 408, 429) and PubNub
not answering are retried with jittered back-off capped at a few seconds; the clinic refusing
(401/403: this device's credential; another 4xx: the request) is retried at a slow pace, since the
clinic may be the one misconfigured. Before each wait it says what it waits for (``report``: the
agent's status line and log); once the step succeeds it says nothing is awaited any more
(``report(None)``). Only the status code or our own words are said, never a clinic's reason (it may
quote the request).

Public API: ``StartPolicy`` (``await attempt(what, step, verdicts_end=False)``, ``await
connected(bus)``); ``ONCE``;
``Patience(report, origin=..., clinic_url=..., low=..., high=..., refused_seconds=...)``;
``credential_refused(exc)``; ``REFUSED_RETRY_SECONDS``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Final, Protocol, TypeVar

from telehealth_client.backoff import back_off_delay
from telehealth_client.consultation.session import CONNECT_TIMEOUT_SECONDS, ConnectedWaiter, SessionError
from telehealth_client.pubsub.bus import BusError, ConnectionStatus, StatusChange
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.clinic_client import ClinicError

T = TypeVar("T")

# A refusal is retried this far apart: the clinic's configuration may be fixed meanwhile.
REFUSED_RETRY_SECONDS: Final = 60.0
# Statuses that say "not now" rather than "no": retried quickly.
_TRANSIENT: Final = frozenset({408, 425, 429})

Report = Callable[[str | None], None]


def credential_refused(exc: BaseException) -> bool:
    """The clinic refused this device's credential (401, or 403 for what it asked)."""
    return isinstance(exc, ClinicError) and exc.status in (401, 403)


def _clinic_refused(exc: ClinicError) -> bool:
    return exc.status is not None and 400 <= exc.status < 500 and exc.status not in _TRANSIENT


class StartPolicy(Protocol):
    async def attempt(self, what: str, step: Callable[[], Awaitable[T]], *, verdicts_end: bool = False) -> T:
        """``step()``'s result; ``what`` names it for the person on call ("the standing token").
        ``verdicts_end``: the clinic's verdict on the request (403, another 4xx but 401) raises, as
        for a consultation whose consent was withdrawn; a 401 (the credential) is still retried."""
        ...

    async def connected(self, bus: PubNubBus) -> None:
        """Return once ``bus`` is connected."""
        ...


class Once:
    async def attempt(self, what: str, step: Callable[[], Awaitable[T]], *, verdicts_end: bool = False) -> T:
        return await step()

    async def connected(self, bus: PubNubBus) -> None:
        waiter = ConnectedWaiter(bus)
        try:
            await waiter.wait(CONNECT_TIMEOUT_SECONDS)
        finally:
            waiter.close()


ONCE: Final = Once()


class Patience:
    def __init__(
        self,
        report: Report,
        *,
        origin: str,
        clinic_url: str,
        low: float = 0.5,
        high: float = 5.0,
        refused_seconds: float = REFUSED_RETRY_SECONDS,
        draw: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._report = report
        self._origin = origin
        self._clinic_url = clinic_url
        self._low = low
        self._high = max(low, high)
        self._refused_seconds = refused_seconds
        self._draw = draw

    async def attempt(self, what: str, step: Callable[[], Awaitable[T]], *, verdicts_end: bool = False) -> T:
        failures = 0
        while True:
            try:
                result = await step()
            except ClinicError as exc:
                if verdicts_end and _clinic_refused(exc) and exc.status != 401:
                    self._report(None)
                    raise
                failures += 1
                delay, waiting = self._clinic_wait(what, exc, failures)
            except (BusError, SessionError) as exc:
                failures += 1
                delay = back_off_delay(failures, self._low, self._high, self._draw)
                if isinstance(exc, BusError) and exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)  # the proxy refused proxy_authorization
                why = exc.reason if isinstance(exc, BusError) else exc.code
                waiting = (
                    f"waiting for PubNub origin {self._origin} for {what} ({why}; {_next(failures, delay)})"
                )
            else:
                if failures:
                    self._report(None)
                return result
            self._report(waiting)
            await asyncio.sleep(delay)

    def _clinic_wait(self, what: str, exc: ClinicError, failures: int) -> tuple[float, str]:
        if credential_refused(exc):
            delay = self._refused_seconds
            return delay, (
                f"the clinic refused this device's credential (device_credential) for {what} "
                f"(HTTP {exc.status}; {_next(failures, delay)})"
            )
        if _clinic_refused(exc):
            delay = self._refused_seconds
            return delay, f"the clinic refused {what} (HTTP {exc.status}; {_next(failures, delay)})"
        delay = back_off_delay(failures, self._low, self._high, self._draw)
        if exc.retry_after is not None:
            delay = max(delay, exc.retry_after)  # the clinic asked for that long
        # Without a status the reason is our own words (unreachable, timed out, malformed).
        why = f"HTTP {exc.status}" if exc.status is not None else exc.reason
        where = f"the clinic backend {self._clinic_url}"
        return delay, f"waiting for {where} for {what} ({why}; {_next(failures, delay)})"

    async def connected(self, bus: PubNubBus) -> None:
        """Until ``bus`` connects, however long; the bus retries by itself and the agent's status
        says so. A bus whose loop ended (``failed``) never will: SessionError."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def changed(change: StatusChange) -> None:
            if done.done():
                return
            if change.status is ConnectionStatus.CONNECTED:
                done.set_result(None)
            elif change.status is ConnectionStatus.FAILED:
                done.set_exception(SessionError("failed", "the pub/sub connection's loop ended"))

        remove = bus.add_status_listener(changed)
        try:
            if bus.status is ConnectionStatus.CONNECTED:
                return
            await done
        finally:
            remove()


def _next(failures: int, delay: float) -> str:
    return f"attempt {failures}, next in {delay:.1f} s"
