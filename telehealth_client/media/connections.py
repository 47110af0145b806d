"""A call's peer connections and which one carries its media: make before break, pure, no I/O.

aiortc cannot restart ICE, so a call is recovered on a new peer connection (PROTOCOL.md, video
signaling, "Recovery"). A call therefore holds, at any moment:

- ``current``: the connection that carries (or carried, and may carry again) the call's media;
- ``pending``: a new connection whose offer or answer is out and that carries no media yet (the
  call's first connection until its media arrives, or a rebuild's);
- ``building``: for the length of one step, the connection whose offer or answer is being made.

A pending connection replaces the current one only once it carries media; until then the current
one keeps playing. Connections are told apart by the other side's ICE ``usernameFragment``: every
link knows its remote description's ``ice-ufrag``, and the ufrags of connections that are gone are
kept (a few) so that their late candidates are recognised and dropped.

Public API: ``Link``; ``Links`` with ``start``, ``get``, ``updated``, ``described``, ``promote``,
``drop``, ``by_ufrag``, ``newest_described``, ``all``, ``ended``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

RETIRED_UFRAGS: Final = 8  # enough for a call's recent rebuilds; older ones are long quiet


@dataclass(frozen=True)
class Link:
    """One peer connection of the call (``id`` is ours, unique for the life of the negotiation)."""

    id: int
    offered: bool  # we offered on it; else it answers the other side's offer
    timetoken: int = 0  # its offer's (ours once published, or theirs)
    remote_ufrag: str | None = None
    remote_description: bool = False
    tries: int = 1  # our offers: which try this is (PROTOCOL: three, with growing answer timeouts)
    round: int = 0  # our offers: the first link of the tries it belongs to (its own id for a first try)
    media: frozenset[str] = frozenset()  # the kinds flowing on it now
    ever: frozenset[str] = frozenset()  # the kinds it has ever carried
    stalled: bool = False  # its media stopped (the current connection only)

    def flowing(self, kind: str) -> Link:
        return replace(self, media=self.media | {kind}, ever=self.ever | {kind}, stalled=False)


@dataclass(frozen=True)
class Links:
    current: Link | None = None
    pending: Link | None = None
    building: Link | None = None
    retired: tuple[str, ...] = ()  # remote ufrags of connections that are gone, newest last
    next_id: int = 1

    def all(self) -> tuple[Link, ...]:
        return tuple(link for link in (self.current, self.pending, self.building) if link is not None)

    def get(self, link_id: int) -> Link | None:
        return next((link for link in self.all() if link.id == link_id), None)

    def start(
        self,
        *,
        offered: bool,
        timetoken: int = 0,
        remote_ufrag: str | None = None,
        retry_of: Link | None = None,
    ) -> tuple[Links, Link]:
        """A new connection, being built (its offer or, with ``offered=False``, its answer);
        ``retry_of``: the offer of ours it tries again."""
        link = Link(
            self.next_id,
            offered,
            timetoken=timetoken,
            remote_ufrag=remote_ufrag,
            remote_description=not offered,  # an answer is made on the offer, set with it
            tries=1 if retry_of is None else retry_of.tries + 1,
            round=self.next_id if retry_of is None else retry_of.round,
        )
        return replace(self, building=link, next_id=self.next_id + 1), link

    def updated(self, link: Link) -> Links:
        """The same connection (by id), changed, wherever it sits."""
        return Links(
            current=link if self.current is not None and self.current.id == link.id else self.current,
            pending=link if self.pending is not None and self.pending.id == link.id else self.pending,
            building=link if self.building is not None and self.building.id == link.id else self.building,
            retired=self.retired,
            next_id=self.next_id,
        )

    def described(self, timetoken: int) -> tuple[Links, Link | None]:
        """The connection being built has its description out (``timetoken``, ours for an offer):
        it is the pending one now; the pending one before it, superseded, is returned to close."""
        assert self.building is not None
        link = replace(self.building, timetoken=timetoken) if self.building.offered else self.building
        superseded = self.pending
        links = replace(self, pending=link, building=None)
        if superseded is not None:
            links = links._retire(superseded)
        return links, superseded

    def promote(self) -> tuple[Links, Link | None]:
        """The pending connection carries media: it is the current one; the old current one is
        returned to close."""
        assert self.pending is not None
        old = self.current
        links = replace(self, current=self.pending, pending=None)
        if old is not None:
            links = links._retire(old)
        return links, old

    def drop(self, link_id: int) -> Links:
        """The connection is gone (abandoned, refused, its process died)."""
        link = self.get(link_id)
        if link is None:
            return self
        links = Links(
            current=None if link is self.current else self.current,
            pending=None if link is self.pending else self.pending,
            building=None if link is self.building else self.building,
            retired=self.retired,
            next_id=self.next_id,
        )
        return links._retire(link)

    def _retire(self, link: Link) -> Links:
        if link.remote_ufrag is None or link.remote_ufrag in self.retired:
            return self
        return replace(self, retired=(*self.retired, link.remote_ufrag)[-RETIRED_UFRAGS:])

    def by_ufrag(self, ufrag: str) -> Link | None:
        return next((link for link in self.all() if link.remote_ufrag == ufrag), None)

    def newest_described(self) -> Link | None:
        """Where a candidate without a ``usernameFragment`` goes: the newest connection that has
        the other side's description."""
        for link in (self.pending, self.current):
            if link is not None and link.remote_description:
                return link
        return None

    def ended(self) -> Links:
        """The call is over: no connection left (ids keep counting: the I/O side keys on them)."""
        links = Links(retired=self.retired, next_id=self.next_id)
        for link in self.all():
            links = links._retire(link)
        return links
