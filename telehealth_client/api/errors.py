"""JSON error answers: every refusal is ``{"error": code, "message": text, "fields": [...]}``.

``fields`` names each failing field (``{"field": "patientId", "reason": "..."}``) on a 422; a 409
also carries ``state`` (the consultation's state, or ``idle``) and a wrong-role 409 ``role``. Texts
hold no PHI, token or key: they are written here or are the product's own codes and reasons.

Public API: ``ApiError(status, code, message, fields=(), **extra)``; ``error_middleware``;
``error_response(...)``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from telehealth_client.logs import describe_exception

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The code each HTTP status of aiohttp's own refusals gets.
_CODES = {
    400: "bad-request",
    401: "unauthorized",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "invalid-body",
    500: "internal",
    503: "unavailable",
}


class ApiError(Exception):
    """A refusal with its HTTP status, a code, a message and (422) the failing fields."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        fields: Sequence[tuple[str, str]] = (),
        **extra: Any,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields)
        self.extra = extra


def error_body(
    code: str, message: str, fields: Sequence[tuple[str, str]] = (), **extra: Any
) -> dict[str, Any]:
    return {
        "error": code,
        "message": message,
        "fields": [{"field": field, "reason": reason} for field, reason in fields],
        **{key: value for key, value in extra.items() if value is not None},
    }


def error_response(
    status: int,
    code: str,
    message: str,
    fields: Sequence[tuple[str, str]] = (),
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    return web.json_response(error_body(code, message, fields, **extra), status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, exc.fields, headers=headers, **exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _CODES.get(exc.status, "error")
        message = {
            404: "no such route",
            405: f"{request.method} is not allowed here",
            413: "the request body is too large",
        }.get(exc.status, exc.reason)
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(exc.status, code, message, headers=headers)
    except Exception as exc:
        # Type and place only: an exception's text may hold what it was given.
        log.error("api request failed route=%s error=%s", _route_name(request), describe_exception(exc))
        return error_response(500, "internal", "the request failed inside the agent; see its log")


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return f"{request.method} {resource.canonical if resource is not None else '?'}"
