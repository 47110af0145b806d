"""HTTP plumbing: aiohttp's low-level server, CORS, faults, signatures and request dispatch.

Paths are parsed from the raw request target, not from aiohttp's decoded path: a published
message travels percent-encoded in the path and may contain ``/``, and request signatures are
computed over the path exactly as sent.

Nothing here logs a path or a query: paths carry messages and keys, queries carry tokens. The
requests aiohttp itself refuses (a request line over the limit, a malformed header) are
answered through ``http_guard`` as JSON with CORS headers, logged by type only.
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

from telehealth_client.logs import describe_exception

from ..http_guard import Guard, RequestCallable
from .access import Grant, Need, verify_signature
from .errors import RelayError, access_denied, service_error
from .state import RelayState

log = logging.getLogger("telehealth_devstack.relay")

MAX_BODY_BYTES = 64 * 1024  # a publish is at most 32 KiB; grants and metadata are smaller still

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Max-Age": "86400",
}
_DEFAULT_ALLOWED_HEADERS = "Origin, X-Requested-With, Content-Type, Accept, Content-Encoding, If-Match"


@dataclass(slots=True)
class Call:
    """One request, parsed: raw and decoded path segments, query, body, and who signed it."""

    request: web.BaseRequest
    state: RelayState
    raw_segments: list[str]
    segments: list[str]
    query: dict[str, str]
    body: str
    signed: bool

    @property
    def uuid(self) -> str | None:
        return self.query.get("uuid") or None

    def authorize(self, needs: list[Need]) -> Grant | None:
        """Check the request's token against ``needs`` when enforcement is on; signed requests pass.

        Returns the token's grant, or None when no token was checked.
        """
        if self.signed or not self.state.enforce_access:
            return None
        return self.state.tokens.check(self.query.get("auth"), self.uuid, needs)

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


def build_handler(state: RelayState, route: Router) -> RequestCallable:
    """The low-level request handler: CORS, faults, logging, then ``route``'s handler."""

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        raw_path, _, raw_query = request.raw_path.partition("?")
        raw_segments = raw_path.split("/")[1:]
        handler = route(request.method, raw_segments)
        if handler is None:
            raise service_error(404, "Not Found", "Balancer")
        query = parse_query(raw_query)
        body = ""
        if request.can_read_body:
            data = await _read_body(request)
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
            now=state.clock(),
        )
        call = Call(request, state, raw_segments, [unquote(s) for s in raw_segments], query, body, signed)
        return await handler(call)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        return await _serve(request, state, dispatch)

    return handle


async def _read_body(request: web.BaseRequest) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise service_error(413, f"Request body larger than {MAX_BODY_BYTES} bytes", "Balancer")
        chunks.append(chunk)
    return b"".join(chunks)


def _refusal(status: int, reason: str) -> web.Response:
    return json_response({"status": status, "error": True, "service": "Balancer", "message": reason}, status)


# What aiohttp refuses itself (a request line over the limit, a malformed header), answered as
# the relay answers and logged by type only: the request line holds keys and messages.
GUARD = Guard(name="relay", logger=log, answer=_refusal, cors=_CORS)


async def _serve(
    request: web.BaseRequest, state: RelayState, dispatch: RequestCallable
) -> web.StreamResponse:
    started = time.perf_counter()
    if request.method == "OPTIONS":
        response: web.StreamResponse = _preflight(request)
    else:
        response = await _handle(request, state, dispatch)
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
    request: web.BaseRequest, state: RelayState, handler: RequestCallable
) -> web.StreamResponse:
    faults = state.faults
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
    except Exception as error:  # a bug must not become aiohttp's logged text answer
        log.error(
            "relay handler failed op=%s error=%s", _operation(request.raw_path), describe_exception(error)
        )
        response = json_response(
            {"status": 500, "error": True, "service": "Balancer", "message": "Internal Server Error"}, 500
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


def _preflight(request: web.BaseRequest) -> web.Response:
    allowed = request.headers.get("Access-Control-Request-Headers", _DEFAULT_ALLOWED_HEADERS)
    return web.Response(status=200, headers={"Access-Control-Allow-Headers": allowed})
