"""The console's sign-in sessions: a random secret per signed-in page, bound to its provider.

Sign-in hands the page its secret; every later ``/dev/`` call sends it in the ``X-Console-Session``
header, and the backend acts as the provider the secret was issued for, never one the request names.
Only a digest of each secret is kept (a lookup's timing says nothing about a secret), in memory, and
the secret is never logged.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict

from aiohttp import web

from telehealth_devstack.clinic.http import FieldError

HEADER = "X-Console-Session"
MAX_SESSIONS = 64  # the oldest is dropped beyond this: sign-ins cannot grow memory without bound


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Sessions:
    """Signed-in pages, each a secret (only its digest kept) to the provider's user ID."""

    def __init__(self, limit: int = MAX_SESSIONS) -> None:
        self._limit = limit
        self._providers: OrderedDict[bytes, str] = OrderedDict()

    def open(self, user_id: str) -> str:
        """A new session of ``user_id``: its secret, for the page alone."""
        secret = secrets.token_urlsafe(32)
        self._providers[_digest(secret)] = user_id
        while len(self._providers) > self._limit:
            self._providers.popitem(last=False)
        return secret

    def provider_of(self, request: web.Request) -> str:
        """The user ID of the request's session; FieldError (401) without a known one."""
        secret = request.headers.get(HEADER)
        if not secret:
            raise FieldError(HEADER, "is missing: sign in first", 401)
        user_id = self._providers.get(_digest(secret))
        if user_id is None:
            raise FieldError(HEADER, "is not a session of this console: sign in again", 401)
        return user_id
