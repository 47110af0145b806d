"""HTTP plumbing of the clinic stand-in: device credentials to identities, body parsing, JSON errors.

Every error answer is ``{"error": "<field>: <reason>", "field", "reason", "errors": [...]}``
so that a client (or a person reading a log) learns which field was wrong and why.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from pydantic import BaseModel, ValidationError

from telehealth_client.logs import describe_exception
from telehealth_client.pubsub import bounded_json

from ..http_guard import Guard
from .identity import DeviceIdentity, NotAllowed

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)


_HTTP_FIELDS = {404: "path", 405: "method", 413: "body"}


class FieldError(Exception):
    """A request problem tied to one field; becomes a JSON error answer."""

    def __init__(self, field: str, reason: str, status: int = 400) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status


def error_response(
    status: int, problems: list[tuple[str, str]], headers: dict[str, str] | None = None
) -> web.Response:
    field, reason = problems[0]
    body = {
        "error": f"{field}: {reason}",
        "field": field,
        "reason": reason,
        "errors": [{"field": f, "reason": r} for f, r in problems],
    }
    return web.json_response(body, status=status, headers=headers)


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        if error["type"] == "missing":
            reason = "is required"
        elif error["type"] == "value_error" and "error" in error.get("ctx", {}):
            reason = str(error["ctx"]["error"])
        else:
            reason = str(error["msg"])
        problems.append((field, reason))
    return problems


async def read_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; FieldError("body", ...) otherwise.

    Bounded: deep nesting would raise RecursionError (a 500), and NaN or an infinity stored in
    the audit sink would make its every read invalid JSON for a strict parser.
    """
    try:
        text = (await request.read()).decode("utf-8")
    except UnicodeDecodeError:
        raise FieldError("body", "must be UTF-8 JSON") from None
    try:
        data: Any = bounded_json.loads(text)
    except bounded_json.JsonLimitError as exc:
        raise FieldError("body", str(exc)) from None
    except ValueError:  # not JSON, or an integer longer than Python converts
        raise FieldError("body", "must be a JSON object") from None
    if not isinstance(data, dict):
        raise FieldError("body", "must be a JSON object")
    return data


def validate(model: type[ModelT], data: dict[str, Any]) -> ModelT:
    """``data`` as ``model``; a 400 answer naming every bad field otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _InvalidBody(_problems(exc)) from None


async def parse_body(request: web.Request, model: type[ModelT]) -> ModelT:
    return validate(model, await read_object(request))


class _InvalidBody(Exception):
    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(problems[0][0])
        self.problems = problems


CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Max-Age": "86400",
}
# What a provider page sends: its device credential and a JSON body (and X-User-Id, see revoke).
CORS_ALLOWED_HEADERS = "Authorization, Content-Type, X-User-Id"


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS headers on every answer, errors included, and the preflight answered without a credential.

    Like the relay: a provider page on another origin (PubNub JS SDK and browser WebRTC) fetches
    its token and TURN credentials here. ``*`` is safe: the credential travels in a header the
    page sets itself, never in a cookie a browser would add on its own.
    """
    if request.method == "OPTIONS":
        return web.Response(
            status=204, headers={**CORS_HEADERS, "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS}
        )
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # anything the next layer did not turn into JSON (redirects)
        exc.headers.update(CORS_HEADERS)
        raise
    response.headers.update(CORS_HEADERS)
    return response


def _refusal(status: int, reason: str) -> web.Response:
    return error_response(status, [("request", reason.lower())])


# What aiohttp refuses before any handler runs (a request line over the limit, a malformed
# header): answered like every other error, with CORS headers, and logged by type only.
GUARD = Guard(name="clinic", logger=logger, answer=_refusal, cors=CORS_HEADERS)


def _route_of(request: web.Request) -> str:
    """The matched route's pattern (``/api/on-call/{departmentId}``), never the path as sent."""
    resource = request.match_info.route.resource
    return "unmatched" if resource is None else resource.canonical


IDENTITY_KEY: web.RequestKey[DeviceIdentity] = web.RequestKey("device_identity", DeviceIdentity)


def device_identity(request: web.Request) -> DeviceIdentity:
    """The identity of the device credential the request was authenticated with."""
    return request[IDENTITY_KEY]


def device_auth_middleware(credentials: Mapping[str, DeviceIdentity]) -> Middleware:
    """401 unless ``Authorization: Bearer <a known device credential>``; also turns errors into JSON.

    The credential's identity is put on the request (``device_identity``) for the handlers.
    """
    known = [(f"Bearer {credential}".encode(), identity) for credential, identity in credentials.items()]

    def identify(presented: bytes) -> DeviceIdentity | None:
        # Constant-time comparison with every credential, no early exit: the answer's timing
        # must reveal neither a credential nor which one matched.
        found: DeviceIdentity | None = None
        for expected, identity in known:
            if hmac.compare_digest(presented, expected):
                found = identity
        return found

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        presented = request.headers.get("Authorization", "").encode()
        identity = identify(presented) if presented else None
        if identity is None:
            reason = "is missing" if not presented else "is not a valid device credential"
            return error_response(401, [("Authorization", reason)], headers={"WWW-Authenticate": "Bearer"})
        request[IDENTITY_KEY] = identity
        try:
            return await handler(request)
        except FieldError as exc:
            return error_response(exc.status, [(exc.field, exc.reason)])
        except NotAllowed as exc:
            return error_response(403, [(exc.field, exc.reason)])
        except _InvalidBody as exc:
            return error_response(400, exc.problems)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            # aiohttp's own refusals (404, 405, 413) answer in JSON like everything else.
            return error_response(exc.status, [(_HTTP_FIELDS.get(exc.status, "request"), exc.reason.lower())])
        except Exception as exc:
            # Type and place only: a message can quote the request, and the path can hold an ID.
            logger.error(
                "clinic_internal_error method=%s route=%s error=%s",
                request.method,
                _route_of(request),
                describe_exception(exc),
            )
            return error_response(500, [("server", "internal error")])

    return middleware
