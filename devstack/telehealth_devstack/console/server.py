"""The provider console's loopback HTTP server: the page's static files, the PubNub JavaScript SDK's
browser build (installed by scripts/setup.sh from the npm registry, never fetched at run time), and
the development provider backend (``backend.py``) under ``/dev/``. FOR DEVELOPMENT ONLY.

Only this machine's browser may use it: it listens on 127.0.0.1, answers only requests whose Host is
its own address (no DNS rebinding), refuses a foreign ``Origin``, and takes POST bodies only as
``application/json`` (a page elsewhere cannot send one without a CORS preflight, which is refused).
Sign-in opens a session (``sessions.py``): every clinic call acts as the session's provider, and
one without a session is refused (401). Every refusal is the clinic stand-in's JSON error form.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from telehealth_devstack.clinic.http import FieldError, error_response, read_object
from telehealth_devstack.console.backend import ClinicAnswer, ConsoleSettings, ProviderBackend
from telehealth_devstack.console.sessions import Sessions
from telehealth_devstack.http_guard import Guard, GuardedAppRunner

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
# npm ci --prefix devstack/telehealth_devstack/console (scripts/setup.sh) puts the SDK here.
SDK_FILE = HERE / "node_modules" / "pubnub" / "dist" / "web" / "pubnub.min.js"
PAGES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
    "/call.js": ("call.js", "text/javascript; charset=utf-8"),
}
MAX_BODY_BYTES = 16 * 1024
# aiohttp's own refusals (no such path, method or a body too large), named like the others.
HTTP_FIELDS = {404: "path", 405: "method", 413: "body"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, field: str, reason: str) -> web.Response:
    # The clinic stand-in's error form: the page reads the console's and the clinic's alike.
    return error_response(status, [(field, reason)])


def _refusal(status: int, reason: str) -> web.Response:
    return _error(status, "request", reason.lower())


GUARD = Guard(name="provider console", logger=logger, answer=_refusal, cors={})


class ProviderConsole:
    """Serves the console on ``127.0.0.1`` (a free port unless ``port`` is given); ``url`` once started."""

    def __init__(self, settings: ConsoleSettings, *, port: int = 0) -> None:
        self._settings = settings
        self._requested_port = port
        self._runner: GuardedAppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the provider console is not started")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("the provider console is already started")
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            self._runner = GuardedAppRunner(
                self._app(ProviderBackend(self._settings, self._session)), guard=GUARD
            )
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self._requested_port)
            await site.start()
            self._port = self._runner.addresses[0][1]
        except BaseException:
            await self.stop()
            raise
        if not SDK_FILE.is_file():
            logger.warning(
                "provider console: the PubNub JavaScript SDK is not installed: run scripts/setup.sh"
            )

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        session, self._session = self._session, None
        try:
            if runner is not None:
                await runner.cleanup()
        finally:
            if session is not None:
                await session.close()

    # -- the application ---------------------------------------------------------------------------

    def _app(self, backend: ProviderBackend) -> web.Application:
        app = web.Application(middlewares=[self._loopback_only], client_max_size=MAX_BODY_BYTES)
        for path, (name, content_type) in PAGES.items():
            app.router.add_get(path, self._static(STATIC_DIR / name, content_type))
        app.router.add_get("/pubnub.js", self._sdk)
        routes = _BackendRoutes(backend)
        app.router.add_get("/dev/providers", routes.providers)
        app.router.add_post("/dev/sign-in", _answering(routes.sign_in))
        app.router.add_post("/dev/clinic/{call}", _answering(routes.forward))
        return app

    @web.middleware
    async def _loopback_only(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        own = {f"127.0.0.1:{self._port}", f"localhost:{self._port}"}
        if request.host not in own:
            return _error(421, "Host", "must be this console's own address")
        origin = request.headers.get("Origin")
        if origin is not None and origin not in {f"http://{host}" for host in own}:
            return _error(403, "Origin", "must be this console's own page")
        if request.method == "POST" and request.content_type != "application/json":
            return _error(415, "Content-Type", "must be application/json")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _error(exc.status, HTTP_FIELDS.get(exc.status, "request"), exc.reason.lower())
        response.headers["Cache-Control"] = "no-store"
        return response

    def _static(self, path: Path, content_type: str) -> Handler:
        async def serve(_: web.Request) -> web.StreamResponse:
            return web.FileResponse(path, headers={"Content-Type": content_type, **self._page_headers()})

        return serve

    def _page_headers(self) -> dict[str, str]:
        # The page talks to its own server and to the relay, nothing else: no CDN, no other host.
        relay = f"http://{self._settings.origin}"
        policy = (
            f"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self' {relay}; "
            "media-src 'self' blob: mediastream:; img-src 'self' data:; base-uri 'none'; form-action 'none'"
        )
        return {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff"}

    async def _sdk(self, _: web.Request) -> web.StreamResponse:
        if not SDK_FILE.is_file():
            return _error(
                503, "pubnub.js", "the PubNub JavaScript SDK is not installed: run scripts/setup.sh"
            )
        return web.FileResponse(SDK_FILE, headers={"Content-Type": "text/javascript; charset=utf-8"})


async def _body(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, bounded as the clinic stand-in bounds its own (nesting too)."""
    try:
        return await read_object(request)
    except FieldError as exc:
        raise FieldError(exc.field, exc.reason, 422) from None


def _answering(work: Callable[[web.Request], Awaitable[web.Response]]) -> Handler:
    """``work``'s answer; a refusal naming the field (422), the clinic's own refusal unchanged, a
    clinic that does not answer (or not in JSON) as 502. Nothing the page sent is logged."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await work(request)
        except FieldError as exc:
            return _error(exc.status, exc.field, exc.reason)
        except ClinicAnswer as exc:
            return web.json_response(exc.body, status=exc.status)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:  # ValueError: an answer not JSON
            logger.warning("provider console: the clinic did not answer error=%s", type(exc).__name__)
            return _error(502, "clinic", "the clinic stand-in did not answer")

    return handler


class _BackendRoutes:
    """The development backend under ``/dev/`` (``backend.py`` does the work)."""

    def __init__(self, backend: ProviderBackend) -> None:
        self._backend = backend
        self._sessions = Sessions()

    async def providers(self, _: web.Request) -> web.Response:
        return web.json_response({"providers": self._backend.directory()})

    async def sign_in(self, request: web.Request) -> web.Response:
        body = await _body(request)
        settings = await self._backend.sign_in(body.get("userId"))
        # The page's secret for its later calls: the provider is taken from it, never a body.
        return web.json_response({**settings, "session": self._sessions.open(settings["userId"])})

    async def forward(self, request: web.Request) -> web.Response:
        provider = self._backend.provider(self._sessions.provider_of(request))
        body = await _body(request)
        payload = body.get("body", {})
        if not isinstance(payload, dict):
            raise FieldError("body", "must be a JSON object", 422)
        return web.json_response(await self._backend.clinic(provider, request.match_info["call"], payload))
