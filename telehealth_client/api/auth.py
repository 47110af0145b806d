"""The bearer token: every route but ``GET /v1/health`` needs ``Authorization: Bearer <api_token>``,
compared in constant time. The token is never logged or returned.

Public API: ``auth_middleware(token, public)``: ``public`` holds the (method, path) pairs open
without it.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection

from aiohttp import web
from aiohttp.typedefs import Middleware

from telehealth_client.api.errors import ApiError, Handler

SCHEME = "bearer "


def token_matches(header: str | None, token: bytes) -> bool:
    """Whether ``header`` is ``Bearer <token>``; every comparison of the token takes the same time."""
    if header is None or header[: len(SCHEME)].lower() != SCHEME:
        # Still compared, so a missing header costs what a wrong one does.
        hmac.compare_digest(b"", token)
        return False
    given = header[len(SCHEME) :].strip().encode("utf-8", "surrogateescape")
    return hmac.compare_digest(given, token)


def auth_middleware(token: str, public: Collection[tuple[str, str]]) -> Middleware:
    expected = token.encode("utf-8")

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if (request.method, request.path) in public:
            return await handler(request)
        if not token_matches(request.headers.get("Authorization"), expected):
            raise ApiError(401, "unauthorized", "this route needs Authorization: Bearer <api_token>")
        return await handler(request)

    return authenticate
