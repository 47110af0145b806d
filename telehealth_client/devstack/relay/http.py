"""HTTP plumbing: the aiohttp application, CORS, faults, signatures and request dispatch.

Paths are parsed from the raw request target, not from aiohttp's decoded path: a published
message travels percent-encoded in the path and may contain ``/``, and request signatures are
computed over the path exactly as sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from .access import Need, verify_signature
from .errors import RelayError, access_denied, service_error
from .state import RelayState

log = logging.getLogger("telehealth_client.devstack.relay")

STATE_KEY: web.AppKey[RelayState] = web.AppKey("relay_state", RelayState)

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Max-Age": "86400",
}
_DEFAULT_ALLOWED_HEADERS = "Origin, X-Requested-With, Content-Type, Accept, Content-Encoding, If-Match"


@dataclass(slots=True)
class Call:
    """One request, parsed: raw and decoded path segments, query, body, and who signed it."""

    request: web.Request
    state: RelayState
    raw_segments: list[str]
    segments: list[str]
    query: dict[str, str]
    body: str
    signed: bool

    @property
    def uuid(self) -> str | None:
        return self.query.get("uuid") or None

    def authorize(self, needs: list[Need]) -> None:
        """Check the request's token against ``needs`` when enforcement is on; signed requests pass."""
        if self.signed or not self.state.enforce_access:
            return
        self.state.tokens.check(self.query.get("auth"), self.uuid, needs)

    def require_signature_when_enforced(self) -> None:
        """With enforcement on, refuse with Access Manager's 403 unless signed with the secret key."""
        if self.state.enforce_access and not self.signed:
            raise access_denied("Forbidden: needs the secret key's signature")

    def require_signature(self) -> None:
        if not self.signed:
            raise service_error(403, "Forbidden: needs the secret key's signature", "Access Manager")


Handler = Callable[[Call], Awaitable[web.StreamResponse]]
Router = Callable[[str, list[str]], Handler | None]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body, separators=(",", ":")),
        content_type="application/json",
        headers={"Cache-Control": "no-cache"},
    )


def parse_query(raw_query: str) -> dict[str, str]:
    """Decode a query string without turning ``+`` into a space (the SDKs send ``%2B`` for ``+``)."""
    query: dict[str, str] = {}
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        query[unquote(key)] = unquote(value)
    return query


def build_app(state: RelayState, route: Router) -> web.Application:
    app = web.Application(middlewares=[_middleware])
    app[STATE_KEY] = state

    async def dispatch(request: web.Request) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        raw_segments = raw_path.split("/")[1:]
        handler = route(request.method, raw_segments)
        if handler is None:
            raise service_error(404, "Not Found", "Balancer")
        query = parse_query(raw_query)
        body = ""
        if request.can_read_body:
            data = await request.read()
            try:
                body = data.decode("utf-8")
            except UnicodeDecodeError:
                raise service_error(400, "Request body is not UTF-8", "Balancer") from None
        keys = state.keys
        signed = verify_signature(
            secret_key=keys.secret_key,
            publish_key=keys.publish_key,
            subscribe_key=keys.subscribe_key,
            method=request.method,
            raw_path=raw_path,
            query=query,
            body=body,
        )
        call = Call(request, state, raw_segments, [unquote(s) for s in raw_segments], query, body, signed)
        return await handler(call)

    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app


@web.middleware
async def _middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    started = time.perf_counter()
    if request.method == "OPTIONS":
        response: web.StreamResponse = _preflight(request)
    else:
        response = await _handle(request, handler)
    response.headers.update(_CORS)
    # Only the operation's first path word and the status: paths carry messages, queries carry tokens.
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "relay request method=%s op=%s status=%d ms=%.1f",
            request.method,
            _operation(request.raw_path),
            response.status,
            (time.perf_counter() - started) * 1000,
        )
    return response


async def _handle(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    faults = request.app[STATE_KEY].faults
    try:
        status = faults.take_failure()
        if status is not None:
            raise service_error(status, "Injected failure", "Balancer")
        if faults.delay > 0:
            await asyncio.sleep(faults.delay)
        await faults.wait_running()
        response = await handler(request)
    except RelayError as error:
        response = json_response(error.body, error.status)
    except web.HTTPException as error:
        response = json_response(
            {"status": error.status, "error": True, "service": "Balancer", "message": error.reason},
            error.status,
        )
    # A stall also holds answers that were already on their way, as a frozen network would.
    await faults.wait_running()
    return response


def _operation(raw_path: str) -> str:
    words = raw_path.partition("?")[0].split("/")
    first = words[1] if len(words) > 1 else ""
    if first in ("v1", "v2", "v3") and len(words) > 2:
        return f"{first}/{words[2]}"
    return first


def _preflight(request: web.Request) -> web.Response:
    allowed = request.headers.get("Access-Control-Request-Headers", _DEFAULT_ALLOWED_HEADERS)
    return web.Response(status=200, headers={"Access-Control-Allow-Headers": allowed})
