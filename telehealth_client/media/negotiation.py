"""Who offers, who answers, which connection carries the call, and which signals belong to it:
pure, no I/O.

The ``.video`` channel carries ``offer``, ``answer``, ``ice-candidate`` and ``end-call``
(PROTOCOL.md, "Video signaling" and its "Recovery"). ``step(negotiation, event)`` returns the next
``Negotiation`` and the effects to run (make an offer or an answer on a connection, accept an
answer, add candidates, close one connection or all, arm a timer, publish ``end-call``, tell that
media flows or stopped), in the style of PubNub's event engine: the state is data, the effects
run elsewhere (``media.signaling``). The connections themselves are ``media.connections.Links``.

Rules (each refusal is an ``Ignored`` effect with a code, never an exception):

- our own messages (publisher = our user ID) and messages from anyone but the consultation's
  current participants are ignored (a forged offer from a third user ID changes nothing);
- a call begins at its first offer's timetoken; anything at or before the end of the previous
  call is stale and ignored; an ``end-call`` for a call that has already ended is ignored, and an
  ``end-call`` is never answered with another (two peers echoing would loop);
- **make before break**: when the media of the current connection stops (a stall) or its process
  dies, a new connection is offered while the current one stays open; it replaces the current one
  once it carries media (its first video frame; its first audio in a call without video), and is
  abandoned if the current one's media comes back first; a connection with no media
  ``MEDIA_TIMEOUT_SECONDS`` after its answer is abandoned and the current one kept;
- an offer that arrives during a call is a rebuild: answered on a new connection, the current one
  kept until the new one carries media; an offer whose connection cannot be built is refused with
  its reason and changes nothing; an answer to such an offer says ``a=setup:active``;
- an offer of ours without an answer is offered again, ``len(ANSWER_TIMEOUTS_SECONDS)`` offers in
  all, each on a new connection (an answer answers our newest offer; older ones are closed); after
  the last the call has failed: ``end-call`` goes out and a new call may start;
- glare: the patient side (polite) drops its own offer and answers the provider's; the provider
  side ignores the patient's offer while its own offer waits for an answer or, answered, for media;
- ``ice-candidate``s go to the connection whose remote ``ice-ufrag`` is their ``usernameFragment``
  (none: the newest connection); those of no connection yet are buffered (browsers trickle, and
  candidates can overtake their offer), those of a connection that is gone are dropped.

Public API: ``Negotiation.new(user_id, polite=...)``; events ``Call``, ``LocalDescription``,
``Received``, ``Hangup``, ``EndPublished``, ``MediaFailed``, ``LinkFailed``, ``Stalled``, ``Lost``,
``Flowing``, ``Expired``; effects ``CreateOffer``, ``AcceptOffer``, ``AcceptAnswer``,
``AddCandidates``, ``CloseLink``, ``PublishEnd``, ``CloseMedia``, ``Arm``, ``MediaUp``,
``MediaDown``, ``Refused``, ``Ignored``; ``step(negotiation, event) -> (Negotiation, effects)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Final, Literal, TypeAlias

from telehealth_client.backoff import ceiling
from telehealth_client.media.connections import Link, Links
from telehealth_client.protocol.messages import (
    Answer,
    EndCall,
    IceCandidate,
    IceCandidateMessage,
    Offer,
    Signal,
)

Phase: TypeAlias = Literal["idle", "offering", "answering", "connected", "ended", "failed"]
Status: TypeAlias = Literal["idle", "active", "ended", "failed"]
MAX_BUFFERED_CANDIDATES: Final = 64  # a browser trickles a handful per network path
# PROTOCOL.md, Recovery: three offers, each waiting this long for its answer (a failure is
# reported 18 s after the first offer).
ANSWER_TIMEOUTS_SECONDS: Final = (5.0, 6.0, 7.0)
MEDIA_TIMEOUT_SECONDS: Final = 20.0  # a new connection with no media this long after its answer is given up
# Both sides see a stall at once: the polite side gives the other's offer a moment to arrive (a
# PubNub hop, ~100-250 ms) before it offers itself. Not longer: a far end that does not rebuild (a
# browser app that only answers) would wait for it on every outage, and a glare costs one offer.
STALL_YIELD_SECONDS: Final = 0.3
RETRY_SECONDS: Final = 0.5  # a rebuild that could not be offered (TURN out of reach) is tried again this soon
REBUILD_MIN_SECONDS: Final = 1.0  # rebuilds that bring no media back are spaced 1, 2, 4... seconds
REBUILD_MAX_SECONDS: Final = 10.0
NO_ANSWER: Final = "the other side did not answer our offers"


# -- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """This side starts a call to ``remote_id`` (the provider calls by default)."""

    remote_id: str


@dataclass(frozen=True)
class LocalDescription:
    """The offer or answer (``kind``) made on connection ``link`` was published at ``timetoken``."""

    link: int
    kind: Literal["offer", "answer"]
    timetoken: int


@dataclass(frozen=True)
class Received:
    signal: Signal
    publisher: str
    timetoken: int


@dataclass(frozen=True)
class Hangup:
    """This side ends the call (``end-call`` is published)."""

    reason: str = "hangup"


@dataclass(frozen=True)
class EndPublished:
    """Our ``end-call`` went out at ``timetoken``: anything the other side sent before it is stale."""

    timetoken: int


@dataclass(frozen=True)
class MediaFailed:
    """The call cannot go on at all: it ends here (``end-call`` is published)."""

    reason: str


@dataclass(frozen=True)
class LinkFailed:
    """Connection ``link`` could not be made (its offer or answer: no TURN, an offer aiortc cannot
    take, its process gone) or the other side's answer could not be applied to it."""

    link: int
    code: str
    reason: str


@dataclass(frozen=True)
class Stalled:
    """No media on connection ``link`` for a while (its watchdog)."""

    link: int


@dataclass(frozen=True)
class Lost:
    """Connection ``link``'s media process is gone: it will carry nothing again."""

    link: int
    reason: str


@dataclass(frozen=True)
class Flowing:
    """Media of ``kind`` (audio or video) arrived on connection ``link``: its first, or its first
    after a stall."""

    link: int
    kind: str


@dataclass(frozen=True)
class AudioOnly:
    """The call goes on without video (``on``; media/fallback.py) or with it again: a connection
    then carries the call with its audio, and one whose audio came back is back."""

    on: bool


@dataclass(frozen=True)
class Timer:
    """What an ``Arm`` effect asks to be told of after its seconds: the answer to our offers
    whose first try was ``link`` (try ``serial``), the media on ``link``, or the next rebuild
    (``serial``)."""

    kind: Literal["answer", "media", "rebuild"]
    link: int = 0
    serial: int = 0


@dataclass(frozen=True)
class Expired:
    timer: Timer


Event: TypeAlias = (
    Call
    | LocalDescription
    | Received
    | Hangup
    | EndPublished
    | MediaFailed
    | LinkFailed
    | Stalled
    | Lost
    | Flowing
    | AudioOnly
    | Expired
)


# -- effects ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateOffer:
    """Make an offer on a new connection ``link`` and publish it."""

    link: int
    remote_id: str


@dataclass(frozen=True)
class AcceptOffer:
    """Answer the remote offer on a new connection ``link`` and publish the answer;
    ``dtls_client``: the answer must say ``a=setup:active`` (a rebuild or an ICE restart of the
    other side's live connection: a browser takes the new DTLS fingerprint only as server)."""

    link: int
    sdp: str
    remote_id: str
    dtls_client: bool = False


@dataclass(frozen=True)
class AcceptAnswer:
    link: int
    sdp: str


@dataclass(frozen=True)
class AddCandidates:
    link: int
    candidates: tuple[IceCandidate, ...]


@dataclass(frozen=True)
class CloseLink:
    """Close one connection (the call goes on); ``reuse``: it never carried media, so its media
    process may serve another connection once the connection is gone."""

    link: int
    reason: str
    reuse: bool = False


@dataclass(frozen=True)
class PublishEnd:
    """Publish ``end-call``: the whole call ends (never to drop one connection)."""


@dataclass(frozen=True)
class CloseMedia:
    """The call is over: close every connection."""

    reason: str


@dataclass(frozen=True)
class Arm:
    timer: Timer
    seconds: float


@dataclass(frozen=True)
class MediaUp:
    """The call's media of ``kind`` flows (again, or on a new connection)."""

    kind: str


@dataclass(frozen=True)
class MediaDown:
    """The call's media stopped (``source``: ``network`` or ``media-process``); a rebuild follows."""

    source: str
    reason: str


@dataclass(frozen=True)
class Refused:
    """An offer was not answered: no connection could be built for it (``reason``)."""

    code: str
    reason: str


@dataclass(frozen=True)
class Ignored:
    code: str
    reason: str


Effect: TypeAlias = (
    CreateOffer
    | AcceptOffer
    | AcceptAnswer
    | AddCandidates
    | CloseLink
    | PublishEnd
    | CloseMedia
    | Arm
    | MediaUp
    | MediaDown
    | Refused
    | Ignored
)


# -- state -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Negotiation:
    user_id: str
    polite: bool
    status: Status = "idle"
    remote_id: str | None = None
    # Timetokens at or below this belong to calls that are over.
    floor: int = 0
    # The current call's first offer (ours once published, or theirs); 0 while none.
    call_timetoken: int = 0
    latest_timetoken: int = 0  # the newest offer or answer the other side sent in this call
    links: Links = field(default_factory=Links)
    buffered: tuple[tuple[str, IceCandidate], ...] = ()  # (publisher, candidate) of no connection yet
    had_media: bool = False  # some connection of this call carried media
    attempts: int = 0  # rebuild offers published since media last flowed (their back-off)
    rebuild_armed: int = 0  # the serial of the rebuild timer armed, 0 while none
    serials: int = 0  # timers' serials handed out
    audio_only: bool = False  # video is not expected (the audio-only fallback): audio carries a call

    @classmethod
    def new(cls, user_id: str, *, polite: bool) -> Negotiation:
        return cls(user_id=user_id, polite=polite)

    @property
    def active(self) -> bool:
        return self.status == "active"

    @property
    def connected(self) -> bool:
        """Offer and answer are exchanged on a connection of the call (the call is up)."""
        links = self.links
        return links.current is not None or (links.pending is not None and links.pending.remote_description)

    @property
    def phase(self) -> Phase:
        """The call as a person would see it (rebuilds under way do not change it)."""
        building = self.links.building
        answering = building is not None and not building.offered
        if self.active:
            if self.connected:
                return "connected"
            return "answering" if answering else "offering"
        if answering:
            return "answering"
        return "idle" if self.status == "idle" else "failed" if self.status == "failed" else "ended"

    @property
    def media_down(self) -> bool:
        """The call has no connection carrying media (it stalled, or is gone)."""
        current = self.links.current
        return self.active and (current is None or current.stalled)


Step: TypeAlias = tuple[Negotiation, tuple[Effect, ...]]


def step(negotiation: Negotiation, event: Event, *, is_participant: Callable[[str], bool]) -> Step:
    """The next negotiation and its effects; ``is_participant(user_id)``: may that user signal?"""
    if isinstance(event, Call):
        return _call(negotiation, event)
    if isinstance(event, LocalDescription):
        return _local_description(negotiation, event)
    if isinstance(event, Hangup):
        return _end(negotiation, event.reason, publish=True)
    if isinstance(event, MediaFailed):
        return _end(negotiation, event.reason, publish=True)
    if isinstance(event, EndPublished):
        return replace(negotiation, floor=max(negotiation.floor, event.timetoken)), ()
    if isinstance(event, LinkFailed):
        return _link_failed(negotiation, event)
    if isinstance(event, Stalled):
        return _stalled(negotiation, event.link)
    if isinstance(event, Lost):
        return _lost(negotiation, event)
    if isinstance(event, Flowing):
        return _flowing(negotiation, event)
    if isinstance(event, AudioOnly):
        return replace(negotiation, audio_only=event.on), ()
    if isinstance(event, Expired):
        return _expired(negotiation, event.timer)
    return _received(negotiation, event, is_participant)


def _ignored(negotiation: Negotiation, code: str, reason: str) -> Step:
    return negotiation, (Ignored(code, reason),)


def _then(first: Step, more: Callable[[Negotiation], Step]) -> Step:
    negotiation, effects = first
    after, added = more(negotiation)
    return after, effects + added


# -- our side: calling, describing, ending -----------------------------------------------------------


def _call(negotiation: Negotiation, event: Call) -> Step:
    if negotiation.active:
        return _ignored(negotiation, "busy", "a call is already under way")
    links, link = negotiation.links.ended().start(offered=True)
    started = replace(
        _fresh_call(negotiation),
        status="active",
        remote_id=event.remote_id,
        links=links,
        buffered=tuple(item for item in negotiation.buffered if item[0] == event.remote_id),
    )
    return started, (CreateOffer(link.id, event.remote_id),)


def _fresh_call(negotiation: Negotiation) -> Negotiation:
    return replace(
        negotiation,
        call_timetoken=0,
        latest_timetoken=0,
        links=negotiation.links.ended(),
        had_media=False,
        attempts=0,
        rebuild_armed=0,
    )


def _local_description(negotiation: Negotiation, event: LocalDescription) -> Step:
    building = negotiation.links.building
    if (
        building is None
        or building.id != event.link
        or building.offered != (event.kind == "offer")
        or (event.kind == "offer" and not negotiation.active)
    ):
        return _ignored(negotiation, "late-description", f"our {event.kind} came after the call moved on")
    links, superseded = negotiation.links.described(event.timetoken)
    described = replace(
        negotiation,
        status="active",
        links=links,
        call_timetoken=negotiation.call_timetoken or event.timetoken,
    )
    effects: tuple[Effect, ...] = ()
    if superseded is not None:
        effects += (CloseLink(superseded.id, "superseded by a newer offer", reuse=not superseded.ever),)
    if event.kind == "offer":
        if building.tries == 1:  # a retry's timer runs from when it was decided (see _expired)
            if negotiation.had_media:
                described = replace(described, attempts=negotiation.attempts + 1)
            effects += (Arm(Timer("answer", building.round, 1), ANSWER_TIMEOUTS_SECONDS[0]),)
    else:
        effects += (Arm(Timer("media", building.id), MEDIA_TIMEOUT_SECONDS),)
    return described, effects


def _end(negotiation: Negotiation, reason: str, *, publish: bool, at: int = 0, failed: bool = False) -> Step:
    if not negotiation.active and negotiation.phase != "answering":
        return _ignored(negotiation, "no-call", "no call is under way")
    ended = replace(
        negotiation,
        status="failed" if failed else "ended",
        floor=max(negotiation.floor, negotiation.call_timetoken, negotiation.latest_timetoken, at),
        call_timetoken=0,
        links=negotiation.links.ended(),
        buffered=(),
        rebuild_armed=0,
        audio_only=False,  # every call begins with video
    )
    effects: tuple[Effect, ...] = (CloseMedia(reason),)
    return ended, ((PublishEnd(), *effects) if publish else effects)


def _link_failed(negotiation: Negotiation, event: LinkFailed) -> Step:
    links = negotiation.links
    link = links.get(event.link)
    if link is None:
        return _ignored(negotiation, "other-call", "a failure of a connection that is gone")
    if link is links.building:
        dropped = replace(negotiation, links=links.drop(link.id))
        return _offer_failed(dropped, link, event) if link.offered else _answer_failed(dropped, event)
    if link is links.pending and link.offered and link.remote_description:
        # Their answer could not be applied: the offer still waits for one (its timer retries).
        waiting = replace(link, remote_description=False, remote_ufrag=None)
        return replace(negotiation, links=links.updated(waiting)), (Refused(event.code, event.reason),)
    return _ignored(negotiation, "late-failure", "the connection is already in use")


def _offer_failed(negotiation: Negotiation, link: Link, event: LinkFailed) -> Step:
    pending = negotiation.links.pending
    if pending is not None and pending.offered and not pending.remote_description:
        # A retry could not be offered: it counts (its timer runs), the offer before it waits on.
        counted = replace(pending, tries=link.tries)
        return replace(negotiation, links=negotiation.links.updated(counted)), ()
    if negotiation.call_timetoken == 0:
        return _end(negotiation, event.reason, publish=True)  # the call could not even begin
    return _want_rebuild(negotiation, "retry")


def _answer_failed(negotiation: Negotiation, event: LinkFailed) -> Step:
    refused: tuple[Effect, ...] = (Refused(event.code, event.reason),)
    if negotiation.active and not negotiation.links.all():
        # Nothing left of the call (our own offer yielded to the one refused): offer again if
        # the call had media, else it could not begin.
        if negotiation.had_media:
            return _then((negotiation, refused), lambda n: _want_rebuild(n, "retry"))
        ended, effects = _end(negotiation, event.reason, publish=True)
        return ended, refused + effects
    if negotiation.active or event.code == "sdp":
        return negotiation, refused  # the call under way, if any, is untouched
    # A first offer we cannot answer for want of TURN or a media process: say so at once.
    ended, effects = _end(replace(negotiation, status="active"), event.reason, publish=True)
    return ended, refused + effects


# -- media: stalls, deaths, first frames, timers ------------------------------------------------------


def _stalled(negotiation: Negotiation, link_id: int) -> Step:
    links = negotiation.links
    if not negotiation.active:
        return _ignored(negotiation, "no-call", "no call is under way")
    current, pending = links.current, links.pending
    if current is not None and current.id == link_id:
        if current.stalled:
            return negotiation, ()
        stalled = replace(current, stalled=True, media=frozenset())
        down = replace(negotiation, links=links.updated(stalled))
        return _then((down, (MediaDown("network", "media stalled"),)), lambda n: _want_rebuild(n, "stall"))
    if pending is not None and pending.id == link_id and current is None:
        # The call's first connection (or the one after a lost one) never brought media.
        dropped = replace(negotiation, links=links.drop(link_id))
        effects = (MediaDown("network", "media stalled"), CloseLink(link_id, "no media", reuse=True))
        return _then((dropped, effects), lambda n: _want_rebuild(n, "stall"))
    return _ignored(negotiation, "not-current", "a stall of a connection that does not carry the call")


def _lost(negotiation: Negotiation, event: Lost) -> Step:
    links = negotiation.links
    link = links.get(event.link)
    if not negotiation.active or link is None:
        return _ignored(negotiation, "other-call", "a connection that is not the call's")
    if link is links.building:
        return negotiation, ()  # its build fails with it: LinkFailed follows
    dropped = replace(negotiation, links=links.drop(link.id))
    effects: tuple[Effect, ...] = (CloseLink(link.id, event.reason),)
    if link is links.current or (link is links.pending and links.current is None):
        effects = (MediaDown("media-process", event.reason), *effects)
    return _then((dropped, effects), lambda n: _want_rebuild(n, "lost"))


def _flowing(negotiation: Negotiation, event: Flowing) -> Step:
    links = negotiation.links
    if not negotiation.active:
        return _ignored(negotiation, "no-call", "no call is under way")
    current, pending, kind = links.current, links.pending, event.kind
    if current is not None and current.id == event.link:
        if kind in current.media:
            return negotiation, ()
        effects: tuple[Effect, ...] = (MediaUp(kind),)
        if current.stalled and kind != "video" and _wants_video(negotiation, current):
            # Its audio is back, its video not yet: still stalled (a call with video is back with
            # its first video frame, as a new connection carries the call with its first).
            partly = replace(current, media=current.media | {kind})
            return replace(negotiation, links=links.updated(partly)), effects
        back = _media_back(replace(negotiation, links=links.updated(current.flowing(kind))))
        ours = back.links.pending
        if current.stalled and ours is not None and ours.offered:
            # Its path came back by itself before our rebuild carried anything: the rebuild goes.
            back = replace(back, links=back.links.drop(ours.id))
            effects += (CloseLink(ours.id, "the connection it was to replace came back", reuse=True),)
        return back, effects
    if pending is not None and pending.id == event.link:
        carrying = pending.flowing(kind)
        waiting = replace(negotiation, links=links.updated(carrying))
        if current is not None and kind != "video" and _wants_video(negotiation, current):
            return waiting, ()  # a call with video: replaced once the new connection shows video
        promoted, old = waiting.links.promote()
        after = _media_back(replace(waiting, links=promoted))
        effects = tuple(MediaUp(each) for each in sorted(carrying.media))
        if old is not None:
            effects = (CloseLink(old.id, "replaced by a new connection that carries media"), *effects)
        return after, effects
    return _ignored(negotiation, "other-call", "media on a connection that is gone")


def _wants_video(negotiation: Negotiation, link: Link) -> bool:
    """Whether ``link``'s call is carried only by video: it had video, and is not audio only."""
    return "video" in link.ever and not negotiation.audio_only


def _media_back(negotiation: Negotiation) -> Negotiation:
    return replace(negotiation, had_media=True, attempts=0, rebuild_armed=0)


def _expired(negotiation: Negotiation, timer: Timer) -> Step:
    links = negotiation.links
    pending = links.pending
    if timer.kind == "rebuild":
        if timer.serial != negotiation.rebuild_armed:
            return negotiation, ()
        return _rebuild_now(replace(negotiation, rebuild_armed=0))
    if pending is None or not negotiation.active:
        return negotiation, ()  # the connection moved on: the timer is stale
    if timer.kind == "answer":
        if (
            not pending.offered
            or pending.remote_description
            or (pending.round, pending.tries) != (timer.link, timer.serial)
        ):
            return negotiation, ()
        if pending.tries >= len(ANSWER_TIMEOUTS_SECONDS):
            return _end(negotiation, NO_ANSWER, publish=True, failed=True)
        # Offered again on a new connection; its time runs from now, so that the last try ends
        # sum(ANSWER_TIMEOUTS_SECONDS) after the first offer, however long each takes to make.
        building, link = links.start(offered=True, retry_of=pending)
        assert negotiation.remote_id is not None
        timeout = ANSWER_TIMEOUTS_SECONDS[link.tries - 1]
        return replace(negotiation, links=building), (
            Arm(Timer("answer", link.round, link.tries), timeout),  # before the offer is made
            CreateOffer(link.id, negotiation.remote_id),
        )
    if pending.id != timer.link:
        return negotiation, ()
    if links.current is None and not negotiation.had_media:
        return negotiation, ()  # the call's first connection: its own watchdog decides
    dropped = replace(negotiation, links=links.drop(pending.id))
    closed = (CloseLink(pending.id, f"no media {MEDIA_TIMEOUT_SECONDS:.0f} s after its answer", reuse=True),)
    return _then((dropped, closed), lambda n: _want_rebuild(n, "abandoned"))


def _want_rebuild(negotiation: Negotiation, cause: Literal["stall", "lost", "retry", "abandoned"]) -> Step:
    """The call's media is down and nothing is on the way: offer a new connection, now or after
    the pause this cause and the rebuilds so far call for."""
    links = negotiation.links
    if (
        not negotiation.media_down
        or links.pending is not None
        or links.building is not None
        or negotiation.rebuild_armed
    ):
        return negotiation, ()
    if cause == "retry":
        delay = RETRY_SECONDS
    elif negotiation.attempts == 0:
        delay = STALL_YIELD_SECONDS if negotiation.polite and cause == "stall" else 0.0
    else:
        delay = ceiling(negotiation.attempts, REBUILD_MIN_SECONDS, REBUILD_MAX_SECONDS)
    if delay == 0.0:
        return _rebuild_now(negotiation)
    serial = negotiation.serials + 1
    armed = replace(negotiation, serials=serial, rebuild_armed=serial)
    return armed, (Arm(Timer("rebuild", serial=serial), delay),)


def _rebuild_now(negotiation: Negotiation) -> Step:
    links = negotiation.links
    if not negotiation.media_down or links.pending is not None or links.building is not None:
        return negotiation, ()  # media came back, or a new connection is on its way
    assert negotiation.remote_id is not None
    building, link = links.start(offered=True)
    return replace(negotiation, links=building), (CreateOffer(link.id, negotiation.remote_id),)


# -- their side: signals -------------------------------------------------------------------------------


def ice_ufrag(sdp: str) -> str | None:
    """The session's (or first media section's) ``a=ice-ufrag``; None when the SDP has none."""
    for line in sdp.splitlines():
        if line.startswith("a=ice-ufrag:"):
            return line[len("a=ice-ufrag:") :].strip() or None
    return None


def _received(negotiation: Negotiation, event: Received, is_participant: Callable[[str], bool]) -> Step:
    signal, publisher = event.signal, event.publisher
    if publisher == negotiation.user_id:
        return _ignored(negotiation, "own", "our own signal")
    if not is_participant(publisher):
        return _ignored(negotiation, "not-a-participant", "the publisher is not in this consultation")
    if event.timetoken <= negotiation.floor:
        return _ignored(negotiation, "stale", "the signal belongs to a call that is over")
    if negotiation.active and negotiation.remote_id not in (None, publisher):
        return _ignored(negotiation, "other-peer", "a call with someone else is under way")
    if isinstance(signal, Offer):
        return _offer(negotiation, signal, publisher, event.timetoken)
    if isinstance(signal, Answer):
        return _answer(negotiation, signal, event.timetoken)
    if isinstance(signal, IceCandidateMessage):
        return _candidate(negotiation, signal.candidate, publisher)
    assert isinstance(signal, EndCall)
    if not negotiation.active:
        return _ignored(negotiation, "no-call", "end-call for a call that has already ended")
    if negotiation.call_timetoken and event.timetoken < negotiation.call_timetoken:
        return _ignored(negotiation, "stale", "the end-call is older than the current call")
    return _end(negotiation, "remote-hangup", publish=False, at=event.timetoken)


def _offer(negotiation: Negotiation, signal: Offer, publisher: str, timetoken: int) -> Step:
    ufrag = ice_ufrag(signal.sdp)
    links = negotiation.links
    if negotiation.active and ufrag is not None and links.by_ufrag(ufrag) is not None:
        # Its ICE credentials are a connection's we have: a renegotiation (which aiortc cannot do:
        # PROTOCOL asks for a new connection) or the same offer again. Not answered, and said so.
        return negotiation, (Refused("duplicate", "an offer for a connection we already have"),)
    ours = links.pending
    if negotiation.active and ours is not None and ours.offered and not negotiation.polite:
        if ours.remote_description:
            return _ignored(negotiation, "glare", "both offered: ours is answered and waits for its media")
        return _ignored(negotiation, "glare", "both offered: the polite side answers ours")
    dropped: tuple[Effect, ...] = ()
    if negotiation.active and ours is not None and ours.offered:
        # Glare, polite side: our offer yields to theirs. It is dropped before theirs is answered
        # (nobody will answer it), and its media process answers theirs instead of a new one.
        negotiation = replace(negotiation, links=links.drop(ours.id))
        dropped = (CloseLink(ours.id, "both offered: the provider's offer is answered", reuse=not ours.ever),)
    rebuild = negotiation.active and negotiation.connected
    base = negotiation if negotiation.active else replace(_fresh_call(negotiation), call_timetoken=timetoken)
    building, link = base.links.start(offered=False, timetoken=timetoken, remote_ufrag=ufrag)
    answering = replace(
        base,
        remote_id=publisher,
        links=building,
        latest_timetoken=max(base.latest_timetoken, timetoken),
    )
    accept = AcceptOffer(link.id, signal.sdp, publisher, dtls_client=rebuild)
    after, effects = _hand_over(answering, link, publisher, accept)
    return after, dropped + effects


def _answer(negotiation: Negotiation, signal: Answer, timetoken: int) -> Step:
    ours = negotiation.links.pending
    if not negotiation.active or ours is None or not ours.offered or ours.remote_description:
        return _ignored(negotiation, "unexpected-answer", "no offer of ours is waiting for an answer")
    if timetoken < ours.timetoken:
        return _ignored(negotiation, "stale", "the answer is older than our offer")
    answered = replace(ours, remote_description=True, remote_ufrag=ice_ufrag(signal.sdp))
    accepted = replace(
        negotiation,
        links=negotiation.links.updated(answered),
        latest_timetoken=max(negotiation.latest_timetoken, timetoken),
    )
    after, effects = _hand_over(
        accepted, answered, negotiation.remote_id or "", AcceptAnswer(ours.id, signal.sdp)
    )
    return after, (*effects, Arm(Timer("media", ours.id), MEDIA_TIMEOUT_SECONDS))


def _hand_over(
    negotiation: Negotiation, link: Link, publisher: str, accept: AcceptOffer | AcceptAnswer
) -> Step:
    """Set the remote description, then hand over the buffered candidates that are its own; the
    publisher's others wait on (they may be a later offer's), anyone else's go."""
    mine = tuple(
        candidate
        for sender, candidate in negotiation.buffered
        if sender == publisher and _belongs(candidate, link.remote_ufrag)
    )
    left = tuple(
        (sender, candidate)
        for sender, candidate in negotiation.buffered
        if sender == publisher and not _belongs(candidate, link.remote_ufrag)
    )
    after = replace(negotiation, buffered=left)
    effects: tuple[Effect, ...] = (accept, AddCandidates(link.id, mine)) if mine else (accept,)
    return after, effects


def _belongs(candidate: IceCandidate, ufrag: str | None) -> bool:
    return candidate.username_fragment is None or ufrag is None or candidate.username_fragment == ufrag


def _candidate(negotiation: Negotiation, candidate: IceCandidate, publisher: str) -> Step:
    links = negotiation.links
    ufrag = candidate.username_fragment
    if negotiation.active:
        link = links.newest_described() if ufrag is None else links.by_ufrag(ufrag)
        if link is not None and link.remote_description:
            return negotiation, (AddCandidates(link.id, (candidate,)),)
    if ufrag is not None and ufrag in links.retired:
        return _ignored(
            negotiation, "other-call", "the candidate's usernameFragment is a closed connection's"
        )
    if len(negotiation.buffered) >= MAX_BUFFERED_CANDIDATES:
        return _ignored(negotiation, "too-many-candidates", "the buffer before the offer is full")
    return replace(negotiation, buffered=(*negotiation.buffered, (publisher, candidate))), ()
