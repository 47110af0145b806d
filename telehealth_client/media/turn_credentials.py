"""TURN credentials held ahead of the offer that needs them.

PROTOCOL.md: an offer is answered within 150 ms of its arrival when the answering side already holds
TURN credentials. ``TurnCredentialCache`` fetches them from the clinic backend as soon as it is
``prefetch()``ed (the patient waits), hands the same ones to every connection while they have at
least ``REUSE_FRACTION`` of their lifetime left, and fetches new ones otherwise, or when asked for
fresh ones (TURN refused the held ones: they may have been revoked or expired on the way). A failed
prefetch is only logged: the connection that needs credentials asks again and reports the failure.

Public API: ``TurnCredentialCache(fetch, clock=time.monotonic)``; ``prefetch()``,
``await get(fresh=False) -> TurnConfig``, ``held``, ``await aclose()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from telehealth_client.logs import describe_exception
from telehealth_client.media.common import TurnConfig

__all__ = ["REUSE_FRACTION", "TurnCredentialCache", "TurnGrant"]

log = logging.getLogger(__name__)

# Credentials with less than this share of their lifetime left are not handed out again: a
# connection made with them keeps its allocation for the whole call, and refreshes it with them.
REUSE_FRACTION: Final = 0.5


@dataclass(frozen=True)
class TurnGrant:
    config: TurnConfig
    ttl_seconds: float


TurnFetch = Callable[[], Awaitable[TurnGrant]]


class TurnCredentialCache:
    def __init__(self, fetch: TurnFetch, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._clock = clock
        self._held: tuple[TurnConfig, float] | None = None  # (credentials, usable until)
        self._fetching: asyncio.Task[TurnConfig] | None = None  # one fetch at a time, shared
        self._prefetch: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def held(self) -> bool:
        """Whether credentials that may be handed out are held now."""
        return self._usable() is not None

    def prefetch(self) -> None:
        """Fetch credentials now, in the background, unless usable ones are held."""
        if self._closed or self.held or (self._prefetch is not None and not self._prefetch.done()):
            return
        self._prefetch = asyncio.ensure_future(self._prefetched())

    async def get(self, *, fresh: bool = False) -> TurnConfig:
        """Credentials for a new connection: the held ones, unless ``fresh`` or too old."""
        if self._closed:
            raise RuntimeError("the TURN credential cache is closed")
        if fresh:
            self._held = None
        usable = self._usable()
        if usable is not None:
            return usable
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.ensure_future(self._fetched())
            # Its failure is raised to whoever awaits it; retrieved here so none is left unread.
            self._fetching.add_done_callback(lambda task: task.cancelled() or task.exception())
        # Shielded: a caller that gives up (a hangup) must not cancel a fetch others share.
        return await asyncio.shield(self._fetching)

    async def aclose(self) -> None:
        self._closed = True
        for task in (self._prefetch, self._fetching):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._held = None

    def _usable(self) -> TurnConfig | None:
        if self._held is None:
            return None
        config, until = self._held
        return config if self._clock() < until else None

    async def _fetched(self) -> TurnConfig:
        fetched_at = self._clock()
        grant = await self._fetch()
        self._held = grant.config, fetched_at + grant.ttl_seconds * REUSE_FRACTION
        return grant.config

    async def _prefetched(self) -> None:
        try:
            await self.get()
        except Exception as exc:
            log.warning("turn credentials not fetched ahead error=%s", describe_exception(exc))
