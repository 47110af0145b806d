"""The call's negotiation, pure: who offers and answers, which signals belong to the current call."""

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


def sdp(ufrag: str) -> str:
    return f"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:x\r\n"


def offer(ufrag: str = "u1", sender: str = PROVIDER) -> Offer:
    return Offer(sender_id=sender, timestamp=datetime.now(UTC), sdp=sdp(ufrag))


def answer(ufrag: str = "a1", sender: str = PATIENT) -> Answer:
    return Answer(sender_id=sender, timestamp=datetime.now(UTC), sdp=sdp(ufrag))


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


def codes(effects: tuple[n.Effect, ...]) -> list[str]:
    return [e.code for e in effects if isinstance(e, n.Ignored)]


def test_the_caller_offers_and_connects_on_the_answer() -> None:
    provider = Side(PROVIDER, polite=False)
    assert provider.feed(n.Call(PATIENT)) == (n.CreateOffer(PATIENT),)
    assert provider.state.phase == "offering"
    assert provider.feed(n.LocalDescription("offer", 100)) == ()
    reply = answer()
    assert provider.receive(reply, PATIENT, 110) == (n.AcceptAnswer(reply.sdp),)
    assert provider.state.phase == "connected" and provider.state.remote_ufrag == "a1"


def test_the_callee_answers_and_connects_once_its_answer_is_out() -> None:
    patient = Side(PATIENT, polite=True)
    incoming = offer()
    assert patient.receive(incoming, PROVIDER, 100) == (n.AcceptOffer(incoming.sdp, PROVIDER, False),)
    assert patient.state.phase == "answering" and patient.state.call_timetoken == 100
    assert patient.feed(n.LocalDescription("answer", 105)) == ()
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
    old = candidate("candidate:9 1 udp 1 127.0.0.1 5009 typ relay", ufrag="old")
    for index, message in enumerate([early[0], old, early[1]]):
        assert patient.receive(message, PROVIDER, 90 + index) == ()
    incoming = offer("u1")
    effects = patient.receive(incoming, PROVIDER, 100)
    assert effects == (
        n.AcceptOffer(incoming.sdp, PROVIDER, False),
        n.AddCandidates((early[0].candidate, early[1].candidate)),
    )
    later = candidate("candidate:3 1 udp 1 127.0.0.1 5003 typ relay")
    assert patient.receive(later, PROVIDER, 101) == (n.AddCandidates((later.candidate,)),)
    assert codes(patient.receive(old, PROVIDER, 102)) == ["other-call"]
    no_fragment = candidate("candidate:4 1 udp 1 127.0.0.1 5004 typ relay", ufrag=None)
    assert patient.receive(no_fragment, PROVIDER, 103) == (n.AddCandidates((no_fragment.candidate,)),)


def test_the_buffer_before_an_offer_is_bounded() -> None:
    patient = Side(PATIENT, polite=True)
    for index in range(n.MAX_BUFFERED_CANDIDATES):
        assert patient.receive(candidate(f"c{index}"), PROVIDER, index + 1) == ()
    assert codes(patient.receive(candidate("one too many"), PROVIDER, 1000)) == ["too-many-candidates"]
    assert len(patient.state.buffered) == n.MAX_BUFFERED_CANDIDATES


def test_glare_the_impolite_side_keeps_its_offer_and_the_polite_side_answers() -> None:
    provider, patient = Side(PROVIDER, polite=False), Side(PATIENT, polite=True)
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription("offer", 100))
    patient.feed(n.Call(PROVIDER))
    patient.feed(n.LocalDescription("offer", 101))
    assert codes(provider.receive(offer("p1", sender=PATIENT), PATIENT, 101)) == ["glare"]
    assert provider.state.phase == "offering"
    theirs = offer("u1")
    assert patient.receive(theirs, PROVIDER, 100) == (n.AcceptOffer(theirs.sdp, PROVIDER, True),)
    assert patient.state.phase == "answering"


def test_an_end_call_ends_the_call_once_and_is_never_answered() -> None:
    patient = Side(PATIENT, polite=True)
    patient.receive(offer(), PROVIDER, 100)
    patient.feed(n.LocalDescription("answer", 105))
    assert patient.receive(end(), PROVIDER, 200) == (n.CloseMedia("remote-hangup"),)
    assert patient.state.phase == "ended" and patient.state.floor == 200
    assert codes(patient.receive(end(), PROVIDER, 201)) == ["no-call"]
    # A candidate or an answer of the call that ended, arriving late, is stale.
    assert codes(patient.receive(candidate("c"), PROVIDER, 150)) == ["stale"]
    assert patient.state.buffered == ()


def test_our_hangup_publishes_end_call_and_what_was_sent_before_it_is_stale() -> None:
    provider = Side(PROVIDER, polite=False)
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription("offer", 100))
    provider.receive(answer(), PATIENT, 110)
    assert provider.feed(n.Hangup()) == (n.PublishEnd(), n.CloseMedia("hangup"))
    assert provider.feed(n.EndPublished(300)) == ()
    assert codes(provider.receive(answer(), PATIENT, 290)) == ["stale"]
    assert codes(provider.feed(n.Hangup())) == ["no-call"]
    # A new call after it.
    assert provider.feed(n.Call(PATIENT)) == (n.CreateOffer(PATIENT),)


def test_answers_that_fit_no_offer_of_ours_are_ignored() -> None:
    provider = Side(PROVIDER, polite=False)
    assert codes(provider.receive(answer(), PATIENT, 50)) == ["unexpected-answer"]
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription("offer", 100))
    assert codes(provider.receive(answer(), PATIENT, 99)) == ["stale"]
    provider.receive(answer(), PATIENT, 110)
    assert codes(provider.receive(answer("a2"), PATIENT, 120)) == ["unexpected-answer"]


def test_a_new_offer_during_a_call_restarts_the_media_and_one_from_someone_else_is_ignored() -> None:
    patient = Side(PATIENT, polite=True)
    patient.receive(offer("u1"), PROVIDER, 100)
    patient.feed(n.LocalDescription("answer", 105))
    rebuilt = offer("u2")
    assert patient.receive(rebuilt, PROVIDER, 300) == (n.AcceptOffer(rebuilt.sdp, PROVIDER, True),)
    assert patient.state.remote_ufrag == "u2"
    patient.members = frozenset({*MEMBERS, COLLEAGUE})
    assert codes(patient.receive(offer("s1", sender=COLLEAGUE), COLLEAGUE, 310)) == ["other-peer"]


def test_a_second_call_while_one_is_under_way_is_refused() -> None:
    provider = Side(PROVIDER, polite=False)
    provider.feed(n.Call(PATIENT))
    assert codes(provider.feed(n.Call(PATIENT))) == ["busy"]
    assert codes(provider.feed(n.LocalDescription("answer", 5))) == ["late-description"]


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


def test_a_rebuild_offers_afresh_and_the_other_side_restarts_on_it() -> None:
    provider, patient = Side(PROVIDER, polite=False), Side(PATIENT, polite=True)
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription("offer", 100))
    patient.receive(offer("u1"), PROVIDER, 100)
    patient.feed(n.LocalDescription("answer", 105))
    provider.receive(answer("a1"), PATIENT, 105)
    # The patient's media process died: it offers on a new connection.
    assert patient.feed(n.Rebuild("media process died")) == (n.CreateOffer(PROVIDER),)
    assert patient.state.phase == "offering" and not patient.state.remote_description
    patient.feed(n.LocalDescription("offer", 200))
    fresh = offer("p2", sender=PATIENT)
    assert provider.receive(fresh, PATIENT, 200) == (n.AcceptOffer(fresh.sdp, PATIENT, True),)
    # A late candidate of the patient's old connection is not used on the new one.
    assert codes(provider.receive(candidate("old", ufrag="a1", sender=PATIENT), PATIENT, 201)) == [
        "other-call"
    ]
    idle = Side(PATIENT, polite=True)
    assert codes(idle.feed(n.Rebuild("stall"))) == ["no-call"]


# -- refusals: each changes nothing and says why (the operator's log line shows code and reason) --------


def calling() -> Side:
    """The provider called the patient; its offer went out at 100."""
    provider = Side(PROVIDER, polite=False, members=frozenset({*MEMBERS, COLLEAGUE}))
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription("offer", 100))
    return provider


def in_call() -> Side:
    """The patient answered the provider's offer of 100 (ufrag u1)."""
    patient = Side(PATIENT, polite=True, members=frozenset({*MEMBERS, COLLEAGUE}))
    patient.receive(offer("u1"), PROVIDER, 100)
    patient.feed(n.LocalDescription("answer", 105))
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
        n.LocalDescription("answer", 5),
        n.Ignored("late-description", "our answer came after the call moved on"),
    ),
    (lambda: Side(PATIENT, polite=True), n.Hangup(), n.Ignored("no-call", "no call is under way")),
    (call_over, n.Rebuild("stall"), n.Ignored("no-call", "no call is under way")),
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
        in_call,
        n.Received(candidate("c", ufrag="old"), PROVIDER, 300),
        n.Ignored("other-call", "the candidate's usernameFragment is another call's"),
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
    assert provider.receive(reply, PATIENT, 100) == (n.AcceptAnswer(reply.sdp),)
    patient = in_call()
    assert patient.receive(end(), PROVIDER, 100) == (n.CloseMedia("remote-hangup"),)
    # The call ended at 100: a signal of that same timetoken is stale, the next one is a new call.
    assert codes(patient.receive(offer("u2"), PROVIDER, 100)) == ["stale"]
    fresh = offer("u2")
    assert patient.receive(fresh, PROVIDER, 101) == (n.AcceptOffer(fresh.sdp, PROVIDER, False),)


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
    # The same after a rebuild whose new offer was not out yet.
    patient = in_call()
    patient.feed(n.Rebuild("stall"))
    assert patient.feed(n.Hangup()) == (n.PublishEnd(), n.CloseMedia("hangup"))


def test_a_rebuild_after_the_call_ended_offers_nothing() -> None:
    patient = call_over()
    assert codes(patient.feed(n.Rebuild("stall reported late"))) == ["no-call"]
    assert patient.state.phase == "ended"


# -- whose candidates, for which call ----------------------------------------------------------------


def test_the_call_we_place_is_with_the_one_we_call_only() -> None:
    provider = Side(PROVIDER, polite=False, members=frozenset({*MEMBERS, COLLEAGUE}))
    provider.feed(n.Call(PATIENT))
    # Before our offer is even out, another participant's offer is not taken for glare.
    assert codes(provider.receive(offer("c1", sender=COLLEAGUE), COLLEAGUE, 90)) == ["other-peer"]
    assert provider.feed(n.Rebuild("stall")) == (n.CreateOffer(PATIENT),)


def test_candidates_buffered_before_we_call_are_kept_only_if_they_are_the_callees() -> None:
    provider = Side(PROVIDER, polite=False, members=frozenset({*MEMBERS, COLLEAGUE}))
    theirs = candidate("candidate:1 1 udp 1 127.0.0.1 5001 typ relay", ufrag=None, sender=PATIENT)
    colleagues = candidate("candidate:2 1 udp 1 127.0.0.1 5002 typ relay", ufrag=None, sender=COLLEAGUE)
    assert provider.receive(theirs, PATIENT, 90) == ()
    assert provider.receive(colleagues, COLLEAGUE, 91) == ()
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription("offer", 100))
    reply = answer()
    assert provider.receive(reply, PATIENT, 110) == (
        n.AcceptAnswer(reply.sdp),
        n.AddCandidates((theirs.candidate,)),
    )


def test_an_offer_takes_only_its_publishers_buffered_candidates() -> None:
    patient = Side(PATIENT, polite=True, members=frozenset({*MEMBERS, COLLEAGUE}))
    colleagues = candidate("candidate:2 1 udp 1 127.0.0.1 5002 typ relay", ufrag=None, sender=COLLEAGUE)
    providers = candidate("candidate:1 1 udp 1 127.0.0.1 5001 typ relay", ufrag=None)
    patient.receive(colleagues, COLLEAGUE, 90)
    patient.receive(providers, PROVIDER, 91)
    incoming = offer()
    assert patient.receive(incoming, PROVIDER, 100) == (
        n.AcceptOffer(incoming.sdp, PROVIDER, False),
        n.AddCandidates((providers.candidate,)),
    )


def test_candidates_handed_over_once_are_not_handed_to_a_rebuilt_connection() -> None:
    patient = Side(PATIENT, polite=True)
    early = candidate("candidate:1 1 udp 1 127.0.0.1 5001 typ relay", ufrag=None)
    patient.receive(early, PROVIDER, 90)
    first = offer("u1")
    assert patient.receive(first, PROVIDER, 100) == (
        n.AcceptOffer(first.sdp, PROVIDER, False),
        n.AddCandidates((early.candidate,)),
    )
    patient.feed(n.LocalDescription("answer", 105))
    rebuilt = offer("u2")
    assert patient.receive(rebuilt, PROVIDER, 300) == (n.AcceptOffer(rebuilt.sdp, PROVIDER, True),)


def test_candidates_waiting_for_an_answer_die_with_the_offer_they_were_for() -> None:
    waiting = candidate("candidate:1 1 udp 1 127.0.0.1 5001 typ relay", ufrag=None, sender=PATIENT)
    # Hung up before the answer came: the next call does not get them.
    provider = calling()
    provider.receive(waiting, PATIENT, 105)
    provider.feed(n.Hangup())
    provider.feed(n.EndPublished(120))
    provider.feed(n.Call(PATIENT))
    provider.feed(n.LocalDescription("offer", 200))
    reply = answer("a2")
    assert provider.receive(reply, PATIENT, 210) == (n.AcceptAnswer(reply.sdp),)
    # Rebuilt before the answer came: the new connection does not get them.
    provider = calling()
    provider.receive(waiting, PATIENT, 105)
    assert provider.feed(n.Rebuild("stall")) == (n.CreateOffer(PATIENT),)
    provider.feed(n.LocalDescription("offer", 200))
    assert provider.receive(reply, PATIENT, 210) == (n.AcceptAnswer(reply.sdp),)


def test_a_candidate_after_the_call_ended_waits_for_the_next_offer() -> None:
    patient = call_over()
    next_one = candidate("candidate:5 1 udp 1 127.0.0.1 5005 typ relay", ufrag="u2")
    assert patient.receive(next_one, PROVIDER, 210) == ()
    fresh = offer("u2")
    assert patient.receive(fresh, PROVIDER, 220) == (
        n.AcceptOffer(fresh.sdp, PROVIDER, False),
        n.AddCandidates((next_one.candidate,)),
    )
