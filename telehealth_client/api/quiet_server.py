"""A quiet aiohttp server: what aiohttp refuses before any handler runs, answered and logged safely.

aiohttp answers a request line over the limit or a malformed header itself: plain text without
CORS headers (a browser page could not read it), and it logs the exception at ERROR, whose message
holds the start of the request (a bearer token, a key, chat text in a body). ``GuardedServer``
serves each connection with ``GuardedRequestHandler`` instead, which answers such requests with
the server's own JSON error and CORS headers and logs the exception's type and place only.

It also bounds how long a connection may take to send a request's headers (``header_seconds``):
aiohttp's keep-alive timer runs from the connection's start and after each answer, and closes the
connection only while it waits for a whole request, so it is that bound (an answer in progress,
an event stream, is never cut by it).

The local API serves through ``GuardedAppRunner``; the development stack's servers (relay, clinic,
console) use the same classes (``telehealth_devstack.http_guard`` re-exports them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from telehealth_client.logs import describe_exception

# aiohttp's own default: a request line or header line longer than this is refused.
DEFAULT_MAX_LINE_SIZE = 8190
# aiohttp's own keep-alive default (an hour): the development servers keep it.
DEFAULT_HEADER_SECONDS = 3630.0


@dataclass(frozen=True, slots=True)
class Guard:
    """How one server answers and logs what aiohttp refuses.

    ``answer(status, reason)`` builds the server's JSON error; ``cors`` is added to it.
    ``name`` starts each log line (``"<name> refused a request ..."``).
    """

    name: str
    logger: logging.Logger
    answer: Callable[[int, str], web.Response]
    cors: Mapping[str, str]


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering and logging its own refusals as ``guard`` says."""

    def __init__(self, manager: web.Server, *, guard: Guard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        guard = self._guard
        if isinstance(exc, LineTooLong):
            status, reason = 414, "Request-URI Too Long"
        else:
            reason = "Bad Request" if status == 400 else "Internal Server Error"
        where = describe_exception(exc) if exc is not None else "no exception"
        guard.logger.warning("%s refused a request status=%d error=%s", guard.name, status, where)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already on its way")
        response = guard.answer(status, reason)
        response.headers.update(guard.cors)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        # aiohttp's own messages and tracebacks may quote the request: log the type and place only.
        exc = kw.get("exc_info")
        where = describe_exception(exc) if isinstance(exc, BaseException) else "unknown"
        self._guard.logger.warning("%s connection error=%s", self._guard.name, where)


RequestCallable = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class GuardedServer(web.Server):
    """aiohttp's low-level server with ``GuardedRequestHandler`` for each connection, no access log."""

    def __init__(
        self,
        handler: RequestCallable,
        *,
        guard: Guard,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        header_seconds: float = DEFAULT_HEADER_SECONDS,
        handler_cancellation: bool = False,
        request_factory: Any = None,
    ) -> None:
        super().__init__(handler, request_factory=request_factory, handler_cancellation=handler_cancellation)
        self._guard = guard
        self._max_line_size = max_line_size
        self._header_seconds = header_seconds

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(
            self,
            guard=self._guard,
            loop=asyncio.get_running_loop(),
            # No access log: it would print paths and queries (aiohttp takes None for "off").
            access_log=None,
            max_line_size=self._max_line_size,
            # Closes a connection that has not sent a whole request this long after it opened or
            # after its last answer (a half-sent request holds a socket no longer).
            keepalive_timeout=self._header_seconds,
        )


class GuardedAppRunner(web.AppRunner):
    """``web.AppRunner`` that serves its application through a ``GuardedServer``."""

    def __init__(
        self,
        app: web.Application,
        *,
        guard: Guard,
        max_line_size: int = DEFAULT_MAX_LINE_SIZE,
        header_seconds: float = DEFAULT_HEADER_SECONDS,
        shutdown_timeout: float = 60.0,
    ) -> None:
        super().__init__(app, handle_signals=False, shutdown_timeout=shutdown_timeout)
        self._guard = guard
        self._max_line_size = max_line_size
        self._header_seconds = header_seconds

    async def _make_server(self) -> web.Server:
        # The application's own server runs its startup hooks and freezes it; only its request
        # handler and request factory are kept, served by a guarded server.
        plain = await super()._make_server()
        return GuardedServer(
            plain.request_handler,
            guard=self._guard,
            max_line_size=self._max_line_size,
            header_seconds=self._header_seconds,
            request_factory=plain.request_factory,
        )
