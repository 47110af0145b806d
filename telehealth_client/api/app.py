"""The aiohttp application and ``LocalApi``, which serves it inside the agent's process.

``LocalApi`` is made before the agent's parts start (its event ring follows the hub from then),
serves once they have (``start``: an ``AppRunner`` with a ``TCPSite`` on ``api_host:api_port``, or
a ``UnixSite`` on ``api_socket``), and stops first (``aclose``), before the parts it drives.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from aiohttp import web

from telehealth_client.api.agent_view import AgentView
from telehealth_client.api.auth import auth_middleware
from telehealth_client.api.device_checks import DeviceChecks
from telehealth_client.api.errors import error_middleware, error_response
from telehealth_client.api.events_stream import EventRing
from telehealth_client.api.metrics import AgentMetrics
from telehealth_client.api.models import MAX_BODY_BYTES
from telehealth_client.api.openapi import OPENAPI_KEY, OpenApiDocument
from telehealth_client.api.quiet_server import Guard, GuardedAppRunner
from telehealth_client.api.routes_previews import PREVIEWS_KEY, PreviewWatchers
from telehealth_client.api.routing import AGENT_KEY, RING_KEY, STATE_KEY, ApiState, Route, add_routes
from telehealth_client.api.static_pages import PUBLIC as PUBLIC_PAGES
from telehealth_client.api.static_pages import add_static_pages
from telehealth_client.api.table import ROUTES

log = logging.getLogger(__name__)

# Long enough for an answer in flight; the event streams end at once (their ring closes first).
SHUTDOWN_SECONDS = 2.0
# A connection must send a whole request's headers within this long of opening (or of its last
# answer), or it is closed: a half-sent request or an idle socket holds no descriptor for long.
# Longer than clients' own idle keep-alive (aiohttp's client drops an idle connection after 15 s),
# so a client does not reuse a connection the agent is closing. Read at ``start`` (a test sets a
# short one).
HEADER_SECONDS = 30.0


def _refusal(status: int, reason: str) -> web.Response:
    # What aiohttp refuses before any handler (a malformed request): the API's own JSON error form.
    code = "request-too-long" if status == 414 else "bad-request" if status == 400 else "internal"
    return error_response(status, code, f"the request was refused: {reason.lower()}")


# Logged as "local api refused a request status=400 error=BadHttpMessage at ...": never its bytes.
GUARD = Guard(name="local api", logger=log, answer=_refusal, cors={})


class ApiStartError(Exception):
    """The API cannot listen where the settings say: names the setting, the address and why."""


def build_app(
    agent: AgentView,
    token: str,
    ring: EventRing,
    routes: list[Route] = ROUTES,
    *,
    checks: DeviceChecks | None = None,
    metrics: AgentMetrics | None = None,
) -> web.Application:
    """The application; ``checks`` and ``metrics`` default to fresh ones (the metrics then count
    no events: ``LocalApi`` passes ones that follow the hub)."""
    public = {(route.method, route.path) for route in routes if route.public} | PUBLIC_PAGES
    public |= {("HEAD", path) for method, path in public if method == "GET"}  # HEAD answers as GET does
    app = web.Application(
        client_max_size=MAX_BODY_BYTES,
        middlewares=[error_middleware, auth_middleware(token, public)],
    )
    app[AGENT_KEY] = agent
    app[RING_KEY] = ring
    app[STATE_KEY] = ApiState(
        checks=checks if checks is not None else DeviceChecks(agent.hub),
        metrics=metrics if metrics is not None else AgentMetrics(agent),
    )
    app[OPENAPI_KEY] = OpenApiDocument(routes)
    app[PREVIEWS_KEY] = PreviewWatchers(agent.hub)
    add_routes(app, routes)
    add_static_pages(app)  # the technician page, open without the token (it asks for it)
    return app


class LocalApi:
    def __init__(self, agent: AgentView, token: str) -> None:
        self._agent = agent
        self.ring = EventRing(agent.hub)
        self.ring.start()
        # Its own registry (never prometheus_client's global one), following the hub from now.
        self.metrics = AgentMetrics(agent)
        self.metrics.start()
        self.checks = DeviceChecks(agent.hub)
        self.app = build_app(agent, token, self.ring, checks=self.checks, metrics=self.metrics)
        self._runner: GuardedAppRunner | None = None
        self.address: str | None = None  # where it listens, once started
        self.port: int | None = None

    async def start(self) -> str:
        """Listen; returns the address (``http://127.0.0.1:PORT`` or ``unix:PATH``)."""
        settings = self._agent.settings
        # No access log (the guarded server keeps none): it would print paths and queries.
        self._runner = GuardedAppRunner(
            self.app, guard=GUARD, header_seconds=HEADER_SECONDS, shutdown_timeout=SHUTDOWN_SECONDS
        )
        await self._runner.setup()
        try:
            if settings.api_socket is not None:
                path = Path(settings.api_socket)
                site: web.BaseSite = web.UnixSite(self._runner, str(path))
                await site.start()
                os.chmod(path, 0o600)  # the token guards it too; only the service's user connects
                self.address = f"unix:{path}"
            else:
                site = web.TCPSite(self._runner, settings.api_host, settings.api_port, reuse_address=False)
                await site.start()
                self.port = _bound_port(self._runner, settings.api_port)
                host = f"[{settings.api_host}]" if ":" in settings.api_host else settings.api_host
                self.address = f"http://{host}:{self.port}"
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            where = (
                f"api_socket: {settings.api_socket}"
                if settings.api_socket is not None
                else f"api_port: {settings.api_host}:{settings.api_port}"
            )
            raise ApiStartError(f"{where}: cannot listen ({exc.strerror or type(exc).__name__})") from None
        log.info("local api listening address=%s", self.address)
        return self.address

    async def aclose(self) -> None:
        """Stop answering: the event streams end, answers in flight get ``SHUTDOWN_SECONDS``."""
        self.app[STATE_KEY].closing = True  # type: ignore[attr-defined]
        await self.ring.aclose()
        await self.checks.aclose()
        await self.metrics.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("local api stopped")


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked


__all__ = ["ApiStartError", "LocalApi", "build_app"]
