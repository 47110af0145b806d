"""Connection faults: what kind each is, and logging them without flooding or secrets.

The SDK turns every failed request into an error envelope; the aiohttp or OS error that
says what really happened is inside it (``status.error_data.exception``) or in its causes.
A fault is logged once when it starts, again at a bounded interval while it lasts, and once
when it ends with its duration. Lines carry the origin and the kind, never a URL (URLs hold
the token and, for GET publishes, the message).
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
from pubnub.enums import PNStatusCategory

from telehealth_client.outbound import PROXY_CREDENTIALS_REFUSED, certificate_problem, proxy_refusal

log = logging.getLogger(__name__)

CONNECTION_REFUSED = "connection refused"
DNS = "DNS lookup failed"  # followed by "for HOST" when the error names the host
TLS = "TLS handshake failed"
TIMEOUT = "timeout"
DISCONNECTED = "connection closed by the server"
# Each followed by what went wrong: "TLS certificate not trusted (unable to get local issuer
# certificate)", "proxy 10.0.0.5:3128 unreachable (connection refused)", "proxy refused the tunnel
# (HTTP 403)"; a 407 is PROXY_CREDENTIALS_REFUSED.
CERTIFICATE = "TLS certificate not trusted"
PROXY_UNREACHABLE = "unreachable"


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        if isinstance(exc, aiohttp.ClientConnectorError):
            yield exc.os_error
        exc = exc.__cause__ or exc.__context__


def classify_exception(exc: BaseException | None) -> str | None:
    """The kind of a transport error, from the error and its causes; None when unknown."""
    for cause in _causes(exc):
        # Most specific first: the proxy's, DNS and TLS errors are ClientConnectorErrors too.
        if isinstance(cause, aiohttp.ClientProxyConnectionError):
            inner = classify_exception(cause.os_error) or type(cause.os_error).__name__
            return f"proxy {cause.host}:{cause.port} {PROXY_UNREACHABLE} ({inner})"
        if isinstance(cause, aiohttp.ClientHttpProxyError):
            return proxy_refusal(cause.status)
        if isinstance(cause, aiohttp.ClientConnectorDNSError):
            return f"{DNS} for {cause.host}" if cause.host else DNS
        untrusted = certificate_problem(cause)
        if untrusted is not None:
            return f"{CERTIFICATE} ({untrusted})"
        if isinstance(cause, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError):
            return TLS
        if isinstance(cause, ConnectionRefusedError):
            return CONNECTION_REFUSED
        if isinstance(cause, TimeoutError | aiohttp.ServerTimeoutError):
            return TIMEOUT
        if isinstance(cause, aiohttp.ServerDisconnectedError | ConnectionResetError):
            return DISCONNECTED
    return None


def is_route_fault(kind: str) -> bool:
    """Whether ``kind`` names the way out (the proxy, an untrusted certificate): something the
    person on call must fix in the settings or the network, so the bus's status says it as it is."""
    return kind.startswith(("proxy ", "the proxy ", CERTIFICATE))


def credentials_refused(kind: str | None) -> bool:
    """Whether ``kind`` is the proxy refusing proxy_authorization (407): tried again only slowly."""
    return kind == PROXY_CREDENTIALS_REFUSED


def classify(envelope: Any) -> str:
    """The kind of fault an SDK error envelope reports: an HTTP status, or a transport error."""
    status = getattr(envelope, "status", None)
    code = getattr(status, "status_code", None)
    if isinstance(code, int) and code >= 400:
        return f"HTTP {code}"
    if getattr(status, "category", None) == PNStatusCategory.PNTimeoutCategory:
        return TIMEOUT
    error_data = getattr(status, "error_data", None)
    exc = getattr(error_data, "exception", None)
    kind = classify_exception(exc if isinstance(exc, BaseException) else None)
    if kind is not None:
        return kind
    if isinstance(exc, ValueError | RecursionError):
        # The SDK's own json.loads failed on the answer (JSON nested ~1000 deep raises
        # RecursionError there): the origin answered, but with something unreadable.
        return f"undecodable answer ({type(exc).__name__})"
    return f"{type(exc).__name__}" if isinstance(exc, BaseException) else "no answer"


class FaultReporter:
    """Logs a connection fault's start, a reminder every ``repeat_seconds`` while it lasts, and its end."""

    def __init__(
        self, origin: str, *, repeat_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._origin = origin
        self._repeat = repeat_seconds
        self._clock = clock
        self._kind: str | None = None
        self._started = 0.0
        self._last_logged = 0.0
        self._failures = 0

    @property
    def kind(self) -> str | None:
        """The kind of the fault in progress, None while the origin answers."""
        return self._kind

    def failed(self, kind: str) -> None:
        now = self._clock()
        self._failures += 1
        if self._kind is None:
            self._kind, self._started, self._last_logged = kind, now, now
            log.warning("bus connection fault started origin=%s error=%s", self._origin, kind)
        elif kind != self._kind or now - self._last_logged >= self._repeat:
            self._kind, self._last_logged = kind, now
            log.warning(
                "bus connection fault continues origin=%s error=%s for_seconds=%.1f failures=%d",
                self._origin,
                kind,
                now - self._started,
                self._failures,
            )

    def succeeded(self) -> None:
        if self._kind is None:
            return
        duration = self._clock() - self._started
        log.warning(
            "bus connection fault ended origin=%s error=%s after_seconds=%.1f failures=%d",
            self._origin,
            self._kind,
            duration,
            self._failures,
        )
        self._kind, self._failures = None, 0
