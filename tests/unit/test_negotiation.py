"""The call's negotiation, pure: who offers and answers, which connection carries the call, which
signals belong to it, and how a call is recovered (make before break, retries, glare)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from telehealth_client.media import negotiation as n
from telehealth_client.media.negotiation import Negotiation, step
from telehealth_client.protocol.messages import Answer, EndCall, IceCandidate, IceCandidateMessage, Offer

PATIENT = "pat-1"
PROVIDER = "dr-lee"
STRANGER = "dr-mallory"
COLLEAGUE = "dr-okafor"  # a participant too, in the tests that say so
MEMBERS = {PATIENT, PROVIDER}


def sdp(ufrag: str, setup: str = "actpass") -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", f"a=ice-ufrag:{ufrag}", "a=ice-pwd:x"]
    return "\r\n".join([*lines, f"a=setup:{setup}", ""])


def offer(ufrag: str = "u1", sender: str = PROVIDER) -> Offer:
    return Offer(sender_id=sender, timestamp=datetime.now(UTC), sdp=sdp(ufrag))


def answer(ufrag: str = "a1", sender: str = PATIENT) -> Answer:
    return Answer(sender_id=sender, timestamp=datetime.now(UTC), sdp=sdp(ufrag, "active"))


def candidate(text: str, ufrag: str | None = "u1", sender: str = PROVIDER) -> IceCandidateMessage:
    return IceCandidateMessage(
        sender_id=sender,
        timestamp=datetime.now(UTC),
        candidate=IceCandidate(candidate=text, sdp_mid="0", sdp_m_line_index=0, username_fragment=ufrag),
    )


def end(sender: str = PROVIDER) -> EndCall:
    return EndCall(sender_id=sender, timestamp=datetime.now(UTC))


class Side:
    """Feeds events to one side's negotiation and keeps the effects of each."""

    def __init__(self, user_id: str, *, polite: bool, members: frozenset[str] = frozenset(MEMBERS)) -> None:
        self.state = Negotiation.new(user_id, polite=polite)
        self.members = members

    def feed(self, event: n.Event) -> tuple[n.Effect, ...]:
        self.state, effects = step(self.state, event, is_participant=lambda user: user in self.members)
        return effects

    def receive(self, signal: n.Signal, publisher: str, timetoken: int) -> tuple[n.Effect, ...]:
        return self.feed(n.Received(signal, publisher, timetoken))

    @property
    def current(self) -> int | None:
        return None if self.state.links.current is None else self.state.links.current.id

    @property
    def pending(self) -> int | None:
        return None if self.state.links.pending is None else self.state.links.pending.id


def codes(effects: tuple[n.Effect, ...]) -> list[str]:
    return [e.code for e in effects if isinstance(e, n.Ignored)]


def of(kind: type, effects: tuple[n.Effect, ...]) -> list[n.Effect]:
    return [e for e in effects if isinstance(e, kind)]


def offered_link(effects: tuple[n.Effect, ...]) -> int:
    [create] = of(n.CreateOffer, effects)
    assert isinstance(create, n.CreateOffer)
    return create.link


def answered_link(effects: tuple[n.Effect, ...]) -> int:
    [accept] = of(n.AcceptOffer, effects)
    assert isinstance(accept, n.AcceptOffer)
    return accept.link


def closed(effects: tuple[n.Effect, ...]) -> list[int]:
    return [e.link for e in effects if isinstance(e, n.CloseLink)]


def armed(effects: tuple[n.Effect, ...]) -> list[tuple[n.Timer, float]]:
    return [(e.timer, e.seconds) for e in effects if isinstance(e, n.Arm)]


def test_the_caller_offers_and_connects_on_the_answer() -> None:
    provider = Side(PROVIDER, polite=False)
    assert provider.feed(n.Call(PATIENT)) == (n.CreateOffer(1, PATIENT),)
    assert provider.state.phase == "offering"
    assert provider.feed(n.LocalDescription(1, "offer", 100)) == (n.Arm(n.Timer("answer", 1, 1), 5.0),)
    reply = answer()
    assert provider.receive(reply, PATIENT, 110) == (
        n.AcceptAnswer(1, reply.sdp),
        n.Arm(n.Timer("media", 1), n.MEDIA_TIMEOUT_SECONDS),
    )
    assert provider.state.phase == "connected" and provider.state.links.pending is not None
    assert provider.state.links.pending.remote_ufrag == "a1"
    # Its first media makes it the call's connection.
    assert provider.feed(n.Flowing(1, "audio")) == (n.MediaUp("audio"),)
    assert provider.current == 1 and provider.pending is None
    assert provider.feed(n.Flowing(1, "video")) == (n.MediaUp("video"),)
    assert provider.feed(n.Flowing(1, "video")) == ()


def test_the_callee_answers_and_connects_once_its_answer_is_out() -> None:
    patient = Side(PATIENT, polite=True)
    incoming = offer()
    assert patient.receive(incoming, PROVIDER, 100) == (n.AcceptOffer(1, incoming.sdp, PROVIDER, False),)
    assert patient.state.phase == "answering" and patient.state.call_timetoken == 100
    assert patient.feed(n.LocalDescription(1, "answer", 105)) == (
        n.Arm(n.Timer("media", 1), n.MEDIA_TIMEOUT_SECONDS),
    )
    assert patient.state.phase == "connected"


def test_own_and_third_party_signals_change_nothing() -> None:
    patient = Side(PATIENT, polite=True)
    before = patient.state
    assert codes(patient.receive(offer(sender=PATIENT), PATIENT, 100)) == ["own"]
    assert codes(patient.receive(offer(sender=STRANGER), STRANGER, 101)) == ["not-a-participant"]
    assert codes(patient.receive(candidate("c", sender=STRANGER), STRANGER, 102)) == ["not-a-participant"]
    assert patient.state == before


def test_candidates_before_the_offer_are_buffered_and_only_the_offers_own_are_used() -> None:
    patient = Side(PATIENT, polite=True)
    early = [
        candidate("candidate:1 1 udp 1 127.0.0.1 5000 typ relay"),
        candidate("2 1 udp 1 127.0.0.1 5001 typ relay"),
    ]
    later_offers = candidate("candidate:9 1 udp 1 127.0.0.1 5009 typ relay", ufrag="u2")
    for index, message in enumerate([early[0], later_offers, early[1]]):
        assert patient.receive(message, PROVIDER, 90 + index) == ()
    incoming = offer("u1")
    effects = patient.receive(incoming, PROVIDER, 100)
    assert effects == (
        n.AcceptOffer(1, incoming.sdp, PROVIDER, False),
        n.AddCandidates(1, (early[0].candidate, early[1].candidate)),
    )
    patient.feed(n.LocalDescription(1, "answer", 105))
    later = candidate("candidate:3 1 udp 1 127.0.0.1 5003 typ relay")
    assert patient.receive(later, PROVIDER, 106) == (n.AddCandidates(1, (later.candidate,)),)
    no_fragment = candidate("candidate:4 1 udp 1 127.0.0.1 5004 typ relay", ufrag=None)
    assert patient.receive(no_fragment, PROVIDER, 107) == (n.AddCandidates(1, (no_fragment.candidate,)),)
    # A candidate of another connection (u2) waits: its offer (a rebuild) may still come.
    rebuilt = offer("u2")
    assert patient.receive(rebuilt, PROVIDER, 200) == (
        n.AcceptOffer(2, rebuilt.sdp, PROVIDER, True),
        n.AddCandidates(2, (later_offers.candidate,)),
    )


def test_the_buffer_before_an_offer_is_bounded() -> None:
    patient = Side(PATIENT, polite=True)
    for index in range(n.MAX_BUFFERED_CANDIDATES):
        assert patient.receive(candidate(f"c{index}"), PROVIDER, index + 1) == ()
    assert codes(patient.receive(candidate("one too many"), PROVIDER, 1000)) == ["too-many-candidates"]
    assert len(patient.state.buffered) == n.MAX_BUFFERED_CANDIDATES


def test_glare_the_impolite_side_keeps_its_offer_and_the_polite_side_answers() -> None:
    provider, patient = Side(PROVIDER, polite=False), Side(PATIENT, polite=True)
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription(1, "offer", 100))
    patient.feed(n.Call(PROVIDER))
    patient.feed(n.LocalDescription(1, "offer", 101))
    assert codes(provider.receive(offer("p1", sender=PATIENT), PATIENT, 101)) == ["glare"]
    assert provider.state.phase == "offering"
    theirs = offer("u1")
    # Its own offer, which nobody will answer, goes first: its media process answers theirs.
    assert patient.receive(theirs, PROVIDER, 100) == (
        n.CloseLink(1, "both offered: the provider's offer is answered", reuse=True),
        n.AcceptOffer(2, theirs.sdp, PROVIDER, False),
    )
    assert patient.state.phase == "answering" and patient.pending is None
    assert closed(patient.feed(n.LocalDescription(2, "answer", 102))) == []
    assert patient.pending == 2


def test_an_end_call_ends_the_call_once_and_is_never_answered() -> None:
    patient = Side(PATIENT, polite=True)
    patient.receive(offer(), PROVIDER, 100)
    patient.feed(n.LocalDescription(1, "answer", 105))
    assert patient.receive(end(), PROVIDER, 200) == (n.CloseMedia("remote-hangup"),)
    assert patient.state.phase == "ended" and patient.state.floor == 200
    assert codes(patient.receive(end(), PROVIDER, 201)) == ["no-call"]
    # A candidate or an answer of the call that ended, arriving late, is stale.
    assert codes(patient.receive(candidate("c"), PROVIDER, 150)) == ["stale"]
    assert patient.state.buffered == ()


def test_our_hangup_publishes_end_call_and_what_was_sent_before_it_is_stale() -> None:
    provider = Side(PROVIDER, polite=False)
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription(1, "offer", 100))
    provider.receive(answer(), PATIENT, 110)
    assert provider.feed(n.Hangup()) == (n.PublishEnd(), n.CloseMedia("hangup"))
    assert provider.feed(n.EndPublished(300)) == ()
    assert codes(provider.receive(answer(), PATIENT, 290)) == ["stale"]
    assert codes(provider.feed(n.Hangup())) == ["no-call"]
    # A new call after it, on a connection of its own.
    assert provider.feed(n.Call(PATIENT)) == (n.CreateOffer(2, PATIENT),)


def test_answers_that_fit_no_offer_of_ours_are_ignored() -> None:
    provider = Side(PROVIDER, polite=False)
    assert codes(provider.receive(answer(), PATIENT, 50)) == ["unexpected-answer"]
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription(1, "offer", 100))
    assert codes(provider.receive(answer(), PATIENT, 99)) == ["stale"]
    provider.receive(answer(), PATIENT, 110)
    assert codes(provider.receive(answer("a2"), PATIENT, 120)) == ["unexpected-answer"]


def test_a_second_call_while_one_is_under_way_is_refused() -> None:
    provider = Side(PROVIDER, polite=False)
    provider.feed(n.Call(PATIENT))
    assert codes(provider.feed(n.Call(PATIENT))) == ["busy"]
    assert codes(provider.feed(n.LocalDescription(1, "answer", 5))) == ["late-description"]


def test_a_media_failure_ends_the_call_and_tells_the_other_side() -> None:
    patient = Side(PATIENT, polite=True)
    patient.receive(offer(), PROVIDER, 100)
    assert patient.feed(n.MediaFailed("TURN server unreachable")) == (
        n.PublishEnd(),
        n.CloseMedia("TURN server unreachable"),
    )


def test_ice_ufrag_reads_the_first_one() -> None:
    assert n.ice_ufrag(sdp("abc") + "a=ice-ufrag:second\r\n") == "abc"
    assert n.ice_ufrag("v=0\r\n") is None


# -- a call under way -----------------------------------------------------------------------------------


def patient_in_call(members: frozenset[str] = frozenset(MEMBERS)) -> Side:
    """The patient answered the provider's offer of 100 (ufrag u1) on link 1; video flows on it."""
    patient = Side(PATIENT, polite=True, members=members)
    patient.receive(offer("u1"), PROVIDER, 100)
    patient.feed(n.LocalDescription(1, "answer", 105))
    patient.feed(n.Flowing(1, "audio"))
    patient.feed(n.Flowing(1, "video"))
    return patient


def provider_in_call() -> Side:
    """The provider's offer of 100 on link 1 was answered (ufrag a1); video flows on it."""
    provider = Side(PROVIDER, polite=False)
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription(1, "offer", 100))
    provider.receive(answer("a1"), PATIENT, 105)
    provider.feed(n.Flowing(1, "video"))
    return provider


def test_a_stall_offers_a_new_connection_and_keeps_the_old_one_open() -> None:
    provider = provider_in_call()
    effects = provider.feed(n.Stalled(1))
    assert effects == (n.MediaDown("network", "media stalled"), n.CreateOffer(2, PATIENT))
    assert closed(effects) == [] and provider.current == 1  # make before break
    assert provider.state.phase == "connected"  # a rebuild does not change the call's phase
    assert provider.feed(n.Stalled(1)) == ()  # told once
    provider.feed(n.LocalDescription(2, "offer", 200))
    provider.receive(answer("a2"), PATIENT, 210)
    # The new connection's audio alone does not replace a connection that had video.
    assert provider.feed(n.Flowing(2, "audio")) == ()
    assert provider.current == 1
    assert provider.feed(n.Flowing(2, "video")) == (
        n.CloseLink(1, "replaced by a new connection that carries media"),
        n.MediaUp("audio"),
        n.MediaUp("video"),
    )
    assert provider.current == 2 and provider.pending is None
    # A late candidate of the patient's old connection is dropped, the new one's is taken.
    assert codes(provider.receive(candidate("old", ufrag="a1", sender=PATIENT), PATIENT, 211)) == [
        "other-call"
    ]
    fresh = candidate("new", ufrag="a2", sender=PATIENT)
    assert provider.receive(fresh, PATIENT, 212) == (n.AddCandidates(2, (fresh.candidate,)),)


def test_the_old_connection_is_kept_when_its_media_comes_back_first() -> None:
    provider = provider_in_call()
    provider.feed(n.Stalled(1))
    provider.feed(n.LocalDescription(2, "offer", 200))
    provider.receive(answer("a2"), PATIENT, 210)
    # Its audio back alone is not the call back (a browser's video can stay away for seconds):
    # the rebuild goes on.
    assert provider.feed(n.Flowing(1, "audio")) == (n.MediaUp("audio"),)
    assert provider.pending == 2 and provider.state.media_down
    assert provider.feed(n.Flowing(1, "video")) == (
        n.MediaUp("video"),
        n.CloseLink(2, "the connection it was to replace came back", reuse=True),
    )
    assert provider.current == 1 and provider.pending is None and not provider.state.media_down
    # The abandoned connection's media and timers change nothing.
    assert codes(provider.feed(n.Flowing(2, "video"))) == ["other-call"]
    assert provider.feed(n.Expired(n.Timer("media", 2))) == ()
    assert provider.feed(n.Expired(n.Timer("answer", 2, 1))) == ()


def test_an_audio_only_call_is_carried_and_comes_back_with_its_audio() -> None:
    """The call fell back to audio only (media/fallback.py): no video is coming, so a rebuilt
    connection replaces the old one with its first audio, and a stalled one is back with its audio;
    with video again, video is what counts."""
    provider = provider_in_call()
    assert provider.feed(n.AudioOnly(True)) == ()
    provider.feed(n.Stalled(1))
    provider.feed(n.LocalDescription(2, "offer", 200))
    provider.receive(answer("a2"), PATIENT, 210)
    assert closed(provider.feed(n.Flowing(2, "audio"))) == [1]
    assert provider.current == 2 and not provider.state.media_down
    provider.feed(n.Stalled(2))
    assert provider.feed(n.Flowing(2, "audio")) == (n.MediaUp("audio"),)
    assert not provider.state.media_down
    provider.feed(n.AudioOnly(False))
    provider.feed(n.Flowing(2, "video"))
    provider.feed(n.Stalled(2))
    provider.feed(n.Flowing(2, "audio"))
    assert provider.state.media_down  # with video again, its audio alone is not the call back
    provider.feed(n.AudioOnly(True))
    provider.feed(n.Hangup())
    assert not provider.state.audio_only  # every call begins with video


def test_the_polite_side_gives_the_other_sides_rebuild_a_moment_before_its_own() -> None:
    patient = patient_in_call()
    effects = patient.feed(n.Stalled(1))
    assert effects == (
        n.MediaDown("network", "media stalled"),
        n.Arm(n.Timer("rebuild", serial=1), n.STALL_YIELD_SECONDS),
    )
    # The provider's rebuild came meanwhile: answered on a new connection, the old one kept.
    rebuilt = offer("u2")
    assert patient.receive(rebuilt, PROVIDER, 300) == (n.AcceptOffer(2, rebuilt.sdp, PROVIDER, True),)
    assert closed(patient.feed(n.LocalDescription(2, "answer", 305))) == []
    assert patient.current == 1 and patient.pending == 2
    assert patient.feed(n.Expired(n.Timer("rebuild", serial=1))) == ()  # nothing of its own
    assert closed(patient.feed(n.Flowing(2, "video"))) == [1]


def test_the_answering_side_keeps_the_new_connection_when_its_old_one_resumes() -> None:
    """Only the side that rebuilt gives its rebuild up for an old connection that came back; the
    other side waits for the new one's media, or gives it up at the media timeout."""
    patient = patient_in_call()
    patient.feed(n.Stalled(1))
    patient.receive(offer("u2"), PROVIDER, 300)
    patient.feed(n.LocalDescription(2, "answer", 305))
    assert patient.feed(n.Flowing(1, "video")) == (n.MediaUp("video"),)
    assert patient.pending == 2
    assert patient.feed(n.Expired(n.Timer("media", 2))) == (
        n.CloseLink(2, f"no media {n.MEDIA_TIMEOUT_SECONDS:.0f} s after its answer", reuse=True),
    )
    assert patient.current == 1 and patient.pending is None


def test_a_new_connection_without_media_is_abandoned_and_the_next_rebuild_waits_longer() -> None:
    provider = provider_in_call()
    provider.feed(n.Stalled(1))
    provider.feed(n.LocalDescription(2, "offer", 200))
    provider.receive(answer("a2"), PATIENT, 210)
    # No media on it 20 s after its answer: given up, the old one kept, and (still stalled) a
    # next rebuild after a pause.
    assert provider.feed(n.Expired(n.Timer("media", 2))) == (
        n.CloseLink(2, f"no media {n.MEDIA_TIMEOUT_SECONDS:.0f} s after its answer", reuse=True),
        n.Arm(n.Timer("rebuild", serial=1), n.REBUILD_MIN_SECONDS),
    )
    assert provider.current == 1
    assert provider.feed(n.Expired(n.Timer("rebuild", serial=1))) == (n.CreateOffer(3, PATIENT),)
    provider.feed(n.LocalDescription(3, "offer", 300))
    provider.receive(answer("a3"), PATIENT, 310)
    assert armed(provider.feed(n.Expired(n.Timer("media", 3))))[-1] == (
        n.Timer("rebuild", serial=2),
        2 * n.REBUILD_MIN_SECONDS,
    )
    # Media back: the back-off starts afresh, and the armed rebuild is off.
    provider.feed(n.Flowing(1, "video"))
    assert provider.feed(n.Expired(n.Timer("rebuild", serial=2))) == ()


def test_a_rebuild_that_cannot_be_offered_is_tried_again_soon() -> None:
    provider = provider_in_call()
    provider.feed(n.Stalled(1))
    assert provider.feed(n.LinkFailed(2, "turn-unreachable", "TURN server unreachable")) == (
        n.Arm(n.Timer("rebuild", serial=1), n.RETRY_SECONDS),
    )
    assert provider.current == 1 and provider.state.phase == "connected"
    assert provider.feed(n.Expired(n.Timer("rebuild", serial=1))) == (n.CreateOffer(3, PATIENT),)


def test_an_unanswered_offer_is_offered_three_times_then_the_call_has_failed() -> None:
    patient = patient_in_call()
    patient.feed(n.Stalled(1))
    assert patient.feed(n.Expired(n.Timer("rebuild", serial=1))) == (n.CreateOffer(2, PROVIDER),)
    assert armed(patient.feed(n.LocalDescription(2, "offer", 200))) == [(n.Timer("answer", 2, 1), 5.0)]
    # Each retry's time runs from when it is decided: the last ends 5 + 6 + 7 s after the first
    # offer, however long the new connections take to make.
    assert patient.feed(n.Expired(n.Timer("answer", 2, 1))) == (
        n.Arm(n.Timer("answer", 2, 2), 6.0),
        n.CreateOffer(3, PROVIDER),
    )
    assert patient.pending == 2  # the older offer is closed once the newer one is out
    assert patient.feed(n.LocalDescription(3, "offer", 300)) == (
        n.CloseLink(2, "superseded by a newer offer", reuse=True),
    )
    assert patient.feed(n.Expired(n.Timer("answer", 2, 2))) == (
        n.Arm(n.Timer("answer", 2, 3), 7.0),
        n.CreateOffer(4, PROVIDER),
    )
    patient.feed(n.LocalDescription(4, "offer", 400))
    assert sum(n.ANSWER_TIMEOUTS_SECONDS) == 18.0
    assert patient.feed(n.Expired(n.Timer("answer", 2, 3))) == (
        n.PublishEnd(),
        n.CloseMedia(n.NO_ANSWER),
    )
    assert patient.state.phase == "failed" and not patient.state.active
    # The consultation goes on: a new call may start, from either side.
    fresh = offer("u9")
    assert patient.receive(fresh, PROVIDER, 500) == (n.AcceptOffer(5, fresh.sdp, PROVIDER, False),)


def test_a_timer_of_an_earlier_round_of_offers_changes_nothing() -> None:
    provider = provider_in_call()
    provider.feed(n.Stalled(1))
    provider.feed(n.LocalDescription(2, "offer", 200))
    provider.feed(n.Expired(n.Timer("answer", 2, 1)))
    provider.feed(n.LocalDescription(3, "offer", 300))
    provider.feed(n.Flowing(1, "video"))  # its path came back: this round is over
    provider.feed(n.Stalled(1))
    provider.feed(n.LinkFailed(4, "turn-unreachable", "TURN server unreachable"))
    provider.feed(n.Expired(n.Timer("rebuild", serial=1)))
    provider.feed(n.LocalDescription(5, "offer", 500))
    provider.feed(n.Expired(n.Timer("answer", 5, 1)))
    assert provider.feed(n.Expired(n.Timer("answer", 2, 2))) == ()  # the first round's second try


def test_an_answer_after_a_retry_answers_the_newest_offer() -> None:
    provider = Side(PROVIDER, polite=False)
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription(1, "offer", 100))
    provider.feed(n.Expired(n.Timer("answer", 1, 1)))
    provider.feed(n.LocalDescription(2, "offer", 200))
    assert codes(provider.receive(answer(), PATIENT, 150)) == ["stale"]  # before our newest offer
    reply = answer("a2")
    assert of(n.AcceptAnswer, provider.receive(reply, PATIENT, 210)) == [n.AcceptAnswer(2, reply.sdp)]


def test_a_retry_that_cannot_be_offered_still_counts() -> None:
    provider = Side(PROVIDER, polite=False)
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription(1, "offer", 100))
    assert provider.feed(n.Expired(n.Timer("answer", 1, 1))) == (
        n.Arm(n.Timer("answer", 1, 2), 6.0),
        n.CreateOffer(2, PATIENT),
    )
    assert provider.feed(n.LinkFailed(2, "turn-unreachable", "TURN server unreachable")) == ()
    assert provider.pending == 1 and provider.state.phase == "offering"
    assert provider.feed(n.Expired(n.Timer("answer", 1, 2)))[1] == n.CreateOffer(3, PATIENT)
    provider.feed(n.LinkFailed(3, "turn-unreachable", "TURN server unreachable"))
    assert provider.feed(n.Expired(n.Timer("answer", 1, 3))) == (n.PublishEnd(), n.CloseMedia(n.NO_ANSWER))
    assert provider.state.phase == "failed"


def test_an_offer_during_a_call_is_a_rebuild_answered_on_a_new_connection() -> None:
    patient = patient_in_call(frozenset({*MEMBERS, COLLEAGUE}))
    rebuilt = offer("u2")
    # dtls_client: the answer says a=setup:active (PROTOCOL.md: a browser's live connection that
    # restarts ICE takes a new DTLS fingerprint only as the DTLS server).
    assert patient.receive(rebuilt, PROVIDER, 300) == (n.AcceptOffer(2, rebuilt.sdp, PROVIDER, True),)
    assert patient.current == 1 and patient.state.phase == "connected"
    assert codes(patient.receive(offer("s1", sender=COLLEAGUE), COLLEAGUE, 310)) == ["other-peer"]
    before = patient.state
    assert patient.receive(offer("u1"), PROVIDER, 320) == (
        n.Refused("duplicate", "an offer for a connection we already have"),
    )
    assert patient.state == before


def test_an_offer_no_connection_can_be_built_for_is_refused_and_changes_nothing() -> None:
    patient = patient_in_call()
    patient.feed(n.Stalled(1))
    patient.receive(offer("u2"), PROVIDER, 300)
    patient.feed(n.LocalDescription(2, "answer", 305))
    before = patient.state
    patient.receive(offer("u3"), PROVIDER, 400)
    assert patient.feed(n.LinkFailed(3, "sdp", "the remote offer could not be answered (KeyError)")) == (
        n.Refused("sdp", "the remote offer could not be answered (KeyError)"),
    )
    links = patient.state.links
    assert (links.current, links.pending, links.building) == (
        before.links.current,
        before.links.pending,
        None,
    )
    assert "u3" in links.retired  # its trickled candidates are dropped
    assert patient.state.phase == "connected" and patient.state.active
    # No call yet: refused too, and no call starts (any failure other than the SDP's ends it).
    idle = Side(PATIENT, polite=True)
    idle.receive(offer("u1"), PROVIDER, 100)
    assert idle.feed(n.LinkFailed(1, "sdp", "bad")) == (n.Refused("sdp", "bad"),)
    assert idle.state.phase == "idle" and idle.state.links.all() == ()
    idle.receive(offer("u2"), PROVIDER, 200)
    assert idle.feed(n.LinkFailed(2, "turn-unreachable", "TURN server unreachable")) == (
        n.Refused("turn-unreachable", "TURN server unreachable"),
        n.PublishEnd(),
        n.CloseMedia("TURN server unreachable"),
    )


def test_glare_during_a_rebuild_goes_to_the_provider() -> None:
    # The provider's own rebuild waits for its answer: the patient's offer is ignored.
    provider = provider_in_call()
    provider.feed(n.Stalled(1))
    provider.feed(n.LocalDescription(2, "offer", 200))
    assert codes(provider.receive(offer("p2", sender=PATIENT), PATIENT, 201)) == ["glare"]
    # Answered but not yet carrying media: it still wins.
    provider.receive(answer("a2"), PATIENT, 210)
    assert codes(provider.receive(offer("p3", sender=PATIENT), PATIENT, 211)) == ["glare"]
    # The patient drops its own rebuild for the provider's.
    patient = patient_in_call()
    patient.feed(n.Stalled(1))
    patient.feed(n.Expired(n.Timer("rebuild", serial=1)))
    patient.feed(n.LocalDescription(2, "offer", 200))
    theirs = offer("u2")
    assert patient.receive(theirs, PROVIDER, 199) == (
        n.CloseLink(2, "both offered: the provider's offer is answered", reuse=True),
        n.AcceptOffer(3, theirs.sdp, PROVIDER, True),
    )
    assert closed(patient.feed(n.LocalDescription(3, "answer", 202))) == []
    assert patient.feed(n.Expired(n.Timer("answer", 2, 1))) == ()  # its own offer's timer is stale
    # And while it has answered a rebuild, it offers none of its own.
    assert patient.feed(n.Stalled(1)) == ()


def test_a_newer_offer_supersedes_one_answered_before() -> None:
    patient = patient_in_call()
    patient.receive(offer("u2"), PROVIDER, 300)
    patient.feed(n.LocalDescription(2, "answer", 305))
    patient.receive(offer("u3"), PROVIDER, 400)
    assert closed(patient.feed(n.LocalDescription(3, "answer", 405))) == [2]
    assert patient.current == 1 and patient.pending == 3


def test_a_lost_media_process_is_replaced_at_once_and_a_lost_new_connection_changes_nothing() -> None:
    patient = patient_in_call()
    assert patient.feed(n.Lost(1, "the media process exited (signal 9)")) == (
        n.MediaDown("media-process", "the media process exited (signal 9)"),
        n.CloseLink(1, "the media process exited (signal 9)"),
        n.CreateOffer(2, PROVIDER),
    )
    assert patient.current is None
    patient.feed(n.LocalDescription(2, "offer", 200))
    patient.receive(answer("a2", sender=PROVIDER), PROVIDER, 210)
    # Nothing to keep: the new connection's first media (of any kind) makes it the call's.
    assert patient.feed(n.Flowing(2, "audio")) == (n.MediaUp("audio"),)
    # A rebuild the other side made, lost before it carried anything: the call goes on.
    patient.receive(offer("u3"), PROVIDER, 300)
    patient.feed(n.LocalDescription(3, "answer", 305))
    assert patient.feed(n.Lost(3, "gone")) == (n.CloseLink(3, "gone"),)
    assert patient.current == 2


def test_an_offer_that_restarts_ice_on_a_live_connection_is_answered_as_dtls_client() -> None:
    patient = patient_in_call()
    restarted = sdp("u2", "active")
    effects = patient.receive(
        Offer(sender_id=PROVIDER, timestamp=datetime.now(UTC), sdp=restarted), PROVIDER, 300
    )
    assert effects == (n.AcceptOffer(2, restarted, PROVIDER, dtls_client=True),)


def test_the_call_phase_and_hub_only_see_a_rebuild_through_media_events() -> None:
    provider = provider_in_call()
    phases = [provider.state.phase]
    for event in (n.Stalled(1), n.LocalDescription(2, "offer", 200), n.Flowing(1, "video")):
        provider.feed(event)
        phases.append(provider.state.phase)
    assert set(phases) == {"connected"}


# -- refusals: each changes nothing and says why (the operator's log line shows code and reason) --------


def calling() -> Side:
    """The provider called the patient; its offer went out at 100."""
    provider = Side(PROVIDER, polite=False, members=frozenset({*MEMBERS, COLLEAGUE}))
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription(1, "offer", 100))
    return provider


def in_call() -> Side:
    """The patient answered the provider's offer of 100 (ufrag u1)."""
    patient = Side(PATIENT, polite=True, members=frozenset({*MEMBERS, COLLEAGUE}))
    patient.receive(offer("u1"), PROVIDER, 100)
    patient.feed(n.LocalDescription(1, "answer", 105))
    return patient


def rebuilt() -> Side:
    """The patient's call moved to a new connection (u2): the first one's (u1) is closed."""
    patient = in_call()
    patient.receive(offer("u2"), PROVIDER, 300)
    patient.feed(n.LocalDescription(2, "answer", 305))
    patient.feed(n.Flowing(2, "video"))
    return patient


def call_over() -> Side:
    """The provider ended the patient's call at 200."""
    patient = in_call()
    patient.receive(end(), PROVIDER, 200)
    return patient


def full_buffer() -> Side:
    patient = Side(PATIENT, polite=True)
    for index in range(n.MAX_BUFFERED_CANDIDATES):
        patient.receive(candidate(f"c{index}"), PROVIDER, index + 1)
    return patient


REFUSALS: list[tuple[Callable[[], Side], n.Event, n.Ignored]] = [
    (calling, n.Call(PATIENT), n.Ignored("busy", "a call is already under way")),
    (
        calling,
        n.LocalDescription(1, "answer", 5),
        n.Ignored("late-description", "our answer came after the call moved on"),
    ),
    (lambda: Side(PATIENT, polite=True), n.Hangup(), n.Ignored("no-call", "no call is under way")),
    (call_over, n.Stalled(1), n.Ignored("no-call", "no call is under way")),
    (
        in_call,
        n.Stalled(7),
        n.Ignored("not-current", "a stall of a connection that does not carry the call"),
    ),
    (in_call, n.Flowing(7, "video"), n.Ignored("other-call", "media on a connection that is gone")),
    (in_call, n.Lost(7, "gone"), n.Ignored("other-call", "a connection that is not the call's")),
    (
        in_call,
        n.LinkFailed(7, "sdp", "bad"),
        n.Ignored("other-call", "a failure of a connection that is gone"),
    ),
    (in_call, n.Received(offer(sender=PATIENT), PATIENT, 300), n.Ignored("own", "our own signal")),
    (
        in_call,
        n.Received(offer(sender=STRANGER), STRANGER, 300),
        n.Ignored("not-a-participant", "the publisher is not in this consultation"),
    ),
    (
        call_over,
        n.Received(answer(), PROVIDER, 150),
        n.Ignored("stale", "the signal belongs to a call that is over"),
    ),
    (
        calling,
        n.Received(offer(sender=COLLEAGUE), COLLEAGUE, 300),
        n.Ignored("other-peer", "a call with someone else is under way"),
    ),
    (
        calling,
        n.Received(offer(sender=PATIENT), PATIENT, 101),
        n.Ignored("glare", "both offered: the polite side answers ours"),
    ),
    (
        lambda: Side(PROVIDER, polite=False),
        n.Received(answer(), PATIENT, 50),
        n.Ignored("unexpected-answer", "no offer of ours is waiting for an answer"),
    ),
    (calling, n.Received(answer(), PATIENT, 99), n.Ignored("stale", "the answer is older than our offer")),
    (
        rebuilt,
        n.Received(candidate("c", ufrag="u1"), PROVIDER, 310),
        n.Ignored("other-call", "the candidate's usernameFragment is a closed connection's"),
    ),
    (
        full_buffer,
        n.Received(candidate("one too many"), PROVIDER, 1000),
        n.Ignored("too-many-candidates", "the buffer before the offer is full"),
    ),
    (
        call_over,
        n.Received(end(), PROVIDER, 300),
        n.Ignored("no-call", "end-call for a call that has already ended"),
    ),
    # An end-call published before the current call's offer (an older call's, delivered late).
    (
        in_call,
        n.Received(end(), PROVIDER, 99),
        n.Ignored("stale", "the end-call is older than the current call"),
    ),
]


@pytest.mark.parametrize(
    ("setup", "event", "expected"), REFUSALS, ids=[f"{r[2].code}-{i}" for i, r in enumerate(REFUSALS)]
)
def test_a_refused_event_changes_nothing_and_says_why(
    setup: Callable[[], Side], event: n.Event, expected: n.Ignored
) -> None:
    side = setup()
    before = side.state
    assert side.feed(event) == (expected,)
    assert side.state == before


# -- where a call begins and ends ------------------------------------------------------------------


def test_a_call_begins_at_its_offers_timetoken_and_what_came_at_the_end_of_the_last_is_stale() -> None:
    provider = calling()
    reply = answer()
    assert of(n.AcceptAnswer, provider.receive(reply, PATIENT, 100)) == [n.AcceptAnswer(1, reply.sdp)]
    patient = in_call()
    assert patient.receive(end(), PROVIDER, 100) == (n.CloseMedia("remote-hangup"),)
    # The call ended at 100: a signal of that same timetoken is stale, the next one is a new call.
    assert codes(patient.receive(offer("u2"), PROVIDER, 100)) == ["stale"]
    fresh = offer("u2")
    assert patient.receive(fresh, PROVIDER, 101) == (n.AcceptOffer(2, fresh.sdp, PROVIDER, False),)


def test_a_call_that_fails_before_our_end_call_is_out_still_makes_its_signals_stale() -> None:
    patient = in_call()
    patient.feed(n.MediaFailed("media process died"))
    # A candidate the provider trickled before its offer of 100, delivered late: not kept for a next call.
    assert codes(patient.receive(candidate("late"), PROVIDER, 99)) == ["stale"]
    assert patient.state.buffered == ()


def test_a_hangup_before_our_offer_is_out_ends_the_call_and_keeps_the_old_calls_signals_stale() -> None:
    provider = calling()
    provider.feed(n.Hangup())
    provider.feed(n.EndPublished(300))
    provider.feed(n.Call(PATIENT))
    assert provider.feed(n.Hangup()) == (n.PublishEnd(), n.CloseMedia("hangup"))
    assert codes(provider.receive(offer("p1", sender=PATIENT), PATIENT, 250)) == ["stale"]
    # The same while a rebuild's offer was being made, and while an answer to a first offer was.
    patient = patient_in_call()
    patient.feed(n.Lost(1, "gone"))
    assert patient.feed(n.Hangup()) == (n.PublishEnd(), n.CloseMedia("hangup"))
    answering = Side(PATIENT, polite=True)
    answering.receive(offer(), PROVIDER, 100)
    assert answering.feed(n.Hangup()) == (n.PublishEnd(), n.CloseMedia("hangup"))
    assert answering.state.links.all() == ()


def test_the_first_offer_that_cannot_be_made_ends_the_call_with_its_reason() -> None:
    provider = Side(PROVIDER, polite=False)
    provider.feed(n.Call(PATIENT))
    assert provider.feed(n.LinkFailed(1, "turn-unreachable", "TURN server unreachable")) == (
        n.PublishEnd(),
        n.CloseMedia("TURN server unreachable"),
    )
    assert provider.state.phase == "ended"


def test_media_events_after_the_call_ended_change_nothing() -> None:
    patient = call_over()
    assert codes(patient.feed(n.Stalled(1))) == ["no-call"]
    assert codes(patient.feed(n.Flowing(1, "video"))) == ["no-call"]
    assert patient.state.phase == "ended"


def test_the_first_connection_that_never_brings_media_is_replaced() -> None:
    provider = calling()
    provider.receive(answer(), PATIENT, 110)
    # Its media timer is not what decides (its watchdog is): nothing to keep or go back to.
    assert provider.feed(n.Expired(n.Timer("media", 1))) == ()
    assert provider.feed(n.Stalled(1)) == (
        n.MediaDown("network", "media stalled"),
        n.CloseLink(1, "no media", reuse=True),
        n.CreateOffer(2, PATIENT),
    )


# -- whose candidates, for which call ----------------------------------------------------------------


def test_the_call_we_place_is_with_the_one_we_call_only() -> None:
    provider = Side(PROVIDER, polite=False, members=frozenset({*MEMBERS, COLLEAGUE}))
    provider.feed(n.Call(PATIENT))
    # Before our offer is even out, another participant's offer is not taken for glare.
    assert codes(provider.receive(offer("c1", sender=COLLEAGUE), COLLEAGUE, 90)) == ["other-peer"]


def test_candidates_buffered_before_we_call_are_kept_only_if_they_are_the_callees() -> None:
    provider = Side(PROVIDER, polite=False, members=frozenset({*MEMBERS, COLLEAGUE}))
    theirs = candidate("candidate:1 1 udp 1 127.0.0.1 5001 typ relay", ufrag=None, sender=PATIENT)
    colleagues = candidate("candidate:2 1 udp 1 127.0.0.1 5002 typ relay", ufrag=None, sender=COLLEAGUE)
    assert provider.receive(theirs, PATIENT, 90) == ()
    assert provider.receive(colleagues, COLLEAGUE, 91) == ()
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription(1, "offer", 100))
    reply = answer()
    assert provider.receive(reply, PATIENT, 110)[:2] == (
        n.AcceptAnswer(1, reply.sdp),
        n.AddCandidates(1, (theirs.candidate,)),
    )


def test_an_offer_takes_only_its_publishers_buffered_candidates() -> None:
    patient = Side(PATIENT, polite=True, members=frozenset({*MEMBERS, COLLEAGUE}))
    colleagues = candidate("candidate:2 1 udp 1 127.0.0.1 5002 typ relay", ufrag=None, sender=COLLEAGUE)
    providers = candidate("candidate:1 1 udp 1 127.0.0.1 5001 typ relay", ufrag=None)
    patient.receive(colleagues, COLLEAGUE, 90)
    patient.receive(providers, PROVIDER, 91)
    incoming = offer()
    assert patient.receive(incoming, PROVIDER, 100) == (
        n.AcceptOffer(1, incoming.sdp, PROVIDER, False),
        n.AddCandidates(1, (providers.candidate,)),
    )


def test_candidates_handed_over_once_are_not_handed_to_a_rebuilt_connection() -> None:
    patient = Side(PATIENT, polite=True)
    early = candidate("candidate:1 1 udp 1 127.0.0.1 5001 typ relay", ufrag=None)
    patient.receive(early, PROVIDER, 90)
    first = offer("u1")
    assert patient.receive(first, PROVIDER, 100) == (
        n.AcceptOffer(1, first.sdp, PROVIDER, False),
        n.AddCandidates(1, (early.candidate,)),
    )
    patient.feed(n.LocalDescription(1, "answer", 105))
    rebuilt_offer = offer("u2")
    assert patient.receive(rebuilt_offer, PROVIDER, 300) == (
        n.AcceptOffer(2, rebuilt_offer.sdp, PROVIDER, True),
    )


def test_candidates_waiting_for_an_answer_die_with_the_offer_they_were_for() -> None:
    waiting = candidate("candidate:1 1 udp 1 127.0.0.1 5001 typ relay", ufrag=None, sender=PATIENT)
    # Hung up before the answer came: the next call does not get them.
    provider = calling()
    provider.receive(waiting, PATIENT, 105)
    provider.feed(n.Hangup())
    provider.feed(n.EndPublished(120))
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription(2, "offer", 200))
    reply = answer("a2")
    assert of(n.AddCandidates, provider.receive(reply, PATIENT, 210)) == []


def test_a_candidate_after_the_call_ended_waits_for_the_next_offer() -> None:
    patient = call_over()
    next_one = candidate("candidate:5 1 udp 1 127.0.0.1 5005 typ relay", ufrag="u2")
    assert patient.receive(next_one, PROVIDER, 210) == ()
    fresh = offer("u2")
    assert patient.receive(fresh, PROVIDER, 220) == (
        n.AcceptOffer(2, fresh.sdp, PROVIDER, False),
        n.AddCandidates(2, (next_one.candidate,)),
    )


def test_a_refused_offer_that_our_own_yielded_to_leaves_no_call_hanging() -> None:
    # The call's first offers crossed; theirs could not be answered: nothing is left of the call.
    patient = Side(PATIENT, polite=True)
    patient.feed(n.Call(PROVIDER))
    patient.feed(n.LocalDescription(1, "offer", 100))
    patient.receive(offer("u1"), PROVIDER, 99)
    assert patient.feed(n.LinkFailed(2, "sdp", "bad")) == (
        n.Refused("sdp", "bad"),
        n.PublishEnd(),
        n.CloseMedia("bad"),
    )
    # During a call whose media process died: a new offer of ours, soon.
    patient = patient_in_call()
    patient.feed(n.Lost(1, "gone"))
    patient.feed(n.LocalDescription(2, "offer", 200))
    patient.receive(offer("u2"), PROVIDER, 201)
    assert patient.feed(n.LinkFailed(3, "sdp", "bad")) == (
        n.Refused("sdp", "bad"),
        n.Arm(n.Timer("rebuild", serial=1), n.RETRY_SECONDS),
    )
