"""Who offers, who answers, and which signals belong to the current call: pure, no I/O.

The ``.video`` channel carries ``offer``, ``answer``, ``ice-candidate`` and ``end-call``
(PROTOCOL.md, "Video signaling"). ``step(negotiation, event)`` returns the next ``Negotiation``
and the effects to run (create an offer, accept an offer and answer it, accept an answer, add
candidates, publish, close the media), in the style of PubNub's event engine: the state is data,
the effects run elsewhere (``media.signaling``).

Rules (each refusal is an ``Ignored`` effect with a code, never an exception):

- our own messages (publisher = our user ID) and messages from anyone but the consultation's
  current participants are ignored (a forged offer from a third user ID changes nothing);
- a call begins at its offer's timetoken; anything at or before the end of the previous call is
  stale and ignored; an ``end-call`` for a call that has already ended is ignored, and an
  ``end-call`` is never answered with another (two peers echoing would loop);
- ``ice-candidate`` messages that arrive before the remote description are buffered (browsers
  trickle, and candidates can overtake the offer) and handed over once it is set; a candidate whose
  ``usernameFragment`` is not the remote description's ``ice-ufrag`` belongs to another call and
  is dropped (timetokens cannot tell: a candidate may be published before its offer lands);
- both sides offering at once (glare) resolves as in perfect negotiation: the polite side (the
  patient endpoint) drops its own offer and answers; the impolite side ignores the other offer
  and waits for the answer to its own.

Public API: ``Negotiation.new(user_id, polite=...)``; events ``Call``, ``LocalDescription``,
``Received``, ``Hangup``, ``EndPublished``, ``Rebuild``, ``MediaFailed``; effects ``CreateOffer``,
``AcceptOffer``, ``AcceptAnswer``, ``AddCandidates``, ``PublishEnd``, ``CloseMedia``, ``Ignored``;
``step(negotiation, event) -> (Negotiation, tuple[Effect, ...])``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final, Literal, TypeAlias

from telehealth_client.protocol.messages import (
    Answer,
    EndCall,
    IceCandidate,
    IceCandidateMessage,
    Offer,
    Signal,
)

Phase: TypeAlias = Literal["idle", "offering", "answering", "connected", "ended"]
MAX_BUFFERED_CANDIDATES: Final = 64  # a browser trickles a handful per network path


# -- events ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """This side starts a call to ``remote_id`` (the provider calls by default)."""

    remote_id: str


@dataclass(frozen=True)
class LocalDescription:
    """The media produced our offer or answer (``kind``) and it was published at ``timetoken``."""

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
class Rebuild:
    """The media of the call under way is gone (its process died, it stalled): offer afresh on a
    new connection. The other side takes the new offer as a restart of the same call."""

    reason: str


@dataclass(frozen=True)
class MediaFailed:
    """The media could not go on (no relay candidate, the child died): the call ends here."""

    reason: str


Event: TypeAlias = Call | LocalDescription | Received | Hangup | EndPublished | Rebuild | MediaFailed


# -- effects ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateOffer:
    remote_id: str


@dataclass(frozen=True)
class AcceptOffer:
    """Set the remote offer and create our answer (a polite side first drops its own offer)."""

    sdp: str
    remote_id: str
    restart: bool = False  # True: a call was under way or offering; the media starts afresh


@dataclass(frozen=True)
class AcceptAnswer:
    sdp: str


@dataclass(frozen=True)
class AddCandidates:
    candidates: tuple[IceCandidate, ...]


@dataclass(frozen=True)
class PublishEnd:
    """Publish ``end-call`` (only ever for a hangup of our own)."""


@dataclass(frozen=True)
class CloseMedia:
    reason: str


@dataclass(frozen=True)
class Ignored:
    code: str
    reason: str


Effect: TypeAlias = (
    CreateOffer | AcceptOffer | AcceptAnswer | AddCandidates | PublishEnd | CloseMedia | Ignored
)


# -- state -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Negotiation:
    user_id: str
    polite: bool
    phase: Phase = "idle"
    remote_id: str | None = None
    # Timetokens at or below this belong to calls that are over.
    floor: int = 0
    # The current call's offer (ours once published, or theirs); 0 while none.
    call_timetoken: int = 0
    remote_description: bool = False
    remote_ufrag: str | None = None  # the remote description's ice-ufrag
    buffered: tuple[tuple[str, IceCandidate], ...] = ()  # (publisher, candidate) before the offer

    @classmethod
    def new(cls, user_id: str, *, polite: bool) -> Negotiation:
        return cls(user_id=user_id, polite=polite)

    @property
    def active(self) -> bool:
        return self.phase in ("offering", "answering", "connected")


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
    if isinstance(event, Rebuild):
        return _rebuild(negotiation)
    return _received(negotiation, event, is_participant)


def _ignored(negotiation: Negotiation, code: str, reason: str) -> Step:
    return negotiation, (Ignored(code, reason),)


def _call(negotiation: Negotiation, event: Call) -> Step:
    if negotiation.active:
        return _ignored(negotiation, "busy", "a call is already under way")
    started = replace(
        negotiation,
        phase="offering",
        remote_id=event.remote_id,
        call_timetoken=0,
        remote_description=False,
        remote_ufrag=None,
        buffered=tuple(item for item in negotiation.buffered if item[0] == event.remote_id),
    )
    return started, (CreateOffer(event.remote_id),)


def _rebuild(negotiation: Negotiation) -> Step:
    if not negotiation.active or negotiation.remote_id is None:
        return _ignored(negotiation, "no-call", "no call is under way")
    # What the other side sent for the old connection is told apart by its ufrag from now on.
    rebuilt = replace(
        negotiation,
        phase="offering",
        call_timetoken=0,
        remote_description=False,
        remote_ufrag=None,
        buffered=(),
    )
    return rebuilt, (CreateOffer(negotiation.remote_id),)


def _local_description(negotiation: Negotiation, event: LocalDescription) -> Step:
    if event.kind == "offer" and negotiation.phase == "offering":
        return replace(negotiation, call_timetoken=event.timetoken), ()
    if event.kind == "answer" and negotiation.phase == "answering":
        return replace(negotiation, phase="connected"), ()
    return _ignored(negotiation, "late-description", f"our {event.kind} came after the call moved on")


def _end(negotiation: Negotiation, reason: str, *, publish: bool, at: int = 0) -> Step:
    if not negotiation.active:
        return _ignored(negotiation, "no-call", "no call is under way")
    ended = replace(
        negotiation,
        phase="ended",
        floor=max(negotiation.floor, negotiation.call_timetoken, at),
        call_timetoken=0,
        remote_description=False,
        remote_ufrag=None,
        buffered=(),
    )
    effects: tuple[Effect, ...] = (CloseMedia(reason),)
    return ended, ((PublishEnd(), *effects) if publish else effects)


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
        if negotiation.phase != "offering" or negotiation.remote_description:
            return _ignored(negotiation, "unexpected-answer", "no offer of ours is waiting for an answer")
        if negotiation.call_timetoken and event.timetoken < negotiation.call_timetoken:
            return _ignored(negotiation, "stale", "the answer is older than our offer")
        connected = replace(negotiation, phase="connected", remote_ufrag=ice_ufrag(signal.sdp))
        return _with_remote(connected, AcceptAnswer(signal.sdp))
    if isinstance(signal, IceCandidateMessage):
        return _candidate(negotiation, signal.candidate, publisher)
    assert isinstance(signal, EndCall)
    if not negotiation.active:
        return _ignored(negotiation, "no-call", "end-call for a call that has already ended")
    if negotiation.call_timetoken and event.timetoken < negotiation.call_timetoken:
        return _ignored(negotiation, "stale", "the end-call is older than the current call")
    return _end(negotiation, "remote-hangup", publish=False, at=event.timetoken)


def _offer(negotiation: Negotiation, signal: Offer, publisher: str, timetoken: int) -> Step:
    restart = False
    if negotiation.phase == "offering" and not negotiation.remote_description:
        if not negotiation.polite:
            return _ignored(negotiation, "glare", "both offered: the polite side answers ours")
        restart = True  # polite: our offer yields to theirs
    elif negotiation.active:
        # A new offer during a call: the other side rebuilt its connection; follow it.
        restart = True
    answering = replace(
        negotiation,
        phase="answering",
        remote_id=publisher,
        call_timetoken=timetoken,
        remote_description=False,
        remote_ufrag=ice_ufrag(signal.sdp),
        buffered=tuple(item for item in negotiation.buffered if item[0] == publisher),
    )
    return _with_remote(answering, AcceptOffer(signal.sdp, publisher, restart))


def _with_remote(negotiation: Negotiation, accept: AcceptOffer | AcceptAnswer) -> Step:
    """Set the remote description, then hand over the candidates that waited for it (those of
    this description only)."""
    waiting = tuple(c for _, c in negotiation.buffered if _same_call(c, negotiation.remote_ufrag))
    after = replace(negotiation, remote_description=True, buffered=())
    effects: tuple[Effect, ...] = (accept, AddCandidates(waiting)) if waiting else (accept,)
    return after, effects


def _same_call(candidate: IceCandidate, ufrag: str | None) -> bool:
    return candidate.username_fragment is None or ufrag is None or candidate.username_fragment == ufrag


def _candidate(negotiation: Negotiation, candidate: IceCandidate, publisher: str) -> Step:
    if negotiation.remote_description:
        if not _same_call(candidate, negotiation.remote_ufrag):
            return _ignored(negotiation, "other-call", "the candidate's usernameFragment is another call's")
        return negotiation, (AddCandidates((candidate,)),)
    if len(negotiation.buffered) >= MAX_BUFFERED_CANDIDATES:
        return _ignored(negotiation, "too-many-candidates", "the buffer before the offer is full")
    return replace(negotiation, buffered=(*negotiation.buffered, (publisher, candidate))), ()
