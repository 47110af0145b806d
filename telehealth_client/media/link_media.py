"""The media of one call's connections, by the negotiation's link id, closed off the caller's path.

Each connection of a call (``media.connections``) has a media of its own: the handle on a media
child process (``MediaWorker``), or an in-process ``MediaCall`` in tests. ``LinkMedia`` keeps them
by link id and closes one or all of them when the negotiation says so, in tasks it owns: a hangup
or a connection replaced never waits for a child's teardown, and ``closed()`` / ``aclose()`` wait
for every close so far. A media that never carried the call (its offer or answer failed, or its
connection was superseded or given up before any media came) is handed back to its source
(``reuse``, told whether a connection must be dropped first) for a later connection when the source
can take it, else closed: a rebuild then costs no new media process.

Public API: ``MediaBackend`` (what a connection's media offers); ``LinkMedia(label, reuse=None)``:
``put(link, media)``, ``get(link)``, ``link_of(media)``, ``links``, ``give_back(link)`` (never
connected), ``recycle(link)`` (connected, never carried media), ``close(link)``, ``close_all()``,
``await returned(within)``, ``await closed(within)``, ``await aclose()``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from telehealth_client.logs import describe_exception
from telehealth_client.protocol.messages import IceCandidate
from telehealth_client.tasks import OwnedTasks

log = logging.getLogger(__name__)


class MediaBackend(Protocol):
    async def offer(self) -> str: ...

    async def answer(self, remote_offer: str) -> str: ...

    async def accept_answer(self, sdp: str) -> None: ...

    async def add_candidate(self, candidate: IceCandidate) -> None: ...

    async def aclose(self) -> None: ...


# Takes back a media for a later connection (``connected``: drop its connection first); False: it
# cannot, and the media is closed.
Reuse = Callable[[MediaBackend, bool], Awaitable[bool]]


class LinkMedia:
    def __init__(self, label: str, *, reuse: Reuse | None = None) -> None:
        self._label = label  # the consultation ID, for the log
        self._reuse = reuse
        self._media: dict[int, MediaBackend] = {}
        self._closings = OwnedTasks()
        self._returns = OwnedTasks()  # media on their way back to their source

    @property
    def links(self) -> tuple[int, ...]:
        return tuple(self._media)

    @property
    def held(self) -> tuple[MediaBackend, ...]:
        return tuple(self._media.values())

    def put(self, link: int, media: MediaBackend) -> None:
        self._media[link] = media

    def get(self, link: int) -> MediaBackend | None:
        return self._media.get(link)

    def link_of(self, media: object) -> int | None:
        return next((link for link, held in self._media.items() if held is media), None)

    def give_back(self, link: int) -> None:
        """The link's media was never connected (its offer or answer failed): reused or closed."""
        self._hand_back(link, connected=False)

    def recycle(self, link: int) -> None:
        """The link's connection never carried media: its media is reused (the connection dropped
        first) or closed."""
        self._hand_back(link, connected=True)

    def _hand_back(self, link: int, *, connected: bool) -> None:
        media = self._media.pop(link, None)
        if media is None:
            return
        if self._reuse is None:
            self._close(media)
            return
        self._returns.spawn(self._returned(media, connected), "media-return")

    async def _returned(self, media: MediaBackend, connected: bool) -> None:
        assert self._reuse is not None
        try:
            taken = await self._reuse(media, connected)
        except Exception as exc:
            log.error("media reuse failed consultation=%s error=%s", self._label, describe_exception(exc))
            taken = False
        if not taken:
            self._close(media)

    async def returned(self, within: float) -> None:
        """Until every media on its way back is back (a new connection may take it), at most
        ``within`` seconds."""
        await self._returns.wait(within)

    def close(self, link: int) -> None:
        media = self._media.pop(link, None)
        if media is not None:
            self._close(media)

    def close_all(self) -> None:
        for link in list(self._media):
            self.close(link)

    def _close(self, media: MediaBackend) -> None:
        self._closings.spawn(self._closed(media), "media-close")

    async def _closed(self, media: MediaBackend) -> None:
        try:
            await media.aclose()
        except Exception as exc:
            log.error("media close failed consultation=%s error=%s", self._label, describe_exception(exc))

    async def closed(self, within: float) -> None:
        """Until every close so far is done (a new call's media needs the devices), at most
        ``within`` seconds: the closes go on, owned here."""
        await self._closings.wait(within)

    async def aclose(self) -> None:
        """Close every media still held and wait for every close (and every return)."""
        self.close_all()
        while self._returns or self._closings:
            await self._returns.finish()
            await self._closings.finish()
