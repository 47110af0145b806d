from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from telehealth_client import events
from telehealth_client.consultation import lifecycle as lc
from telehealth_client.consultation.lifecycle import (
    CloseSession,
    Consultation,
    Emit,
    Forbidden,
    Ignored,
    IllegalTransition,
    Persist,
    PresenceChanged,
    Publish,
    Published,
    Received,
    Refused,
    plan,
    summary_duration,
    transition,
)
from telehealth_client.consultation.roster import ChangeKind, MemberStatus, RosterRole
from telehealth_client.protocol import messages as m
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.pubsub.bus import PresenceEvent

PROVIDER = "dr-lee"
PATIENT = "pt-1"
SPECIALIST = "dr-cardio"
CID = f"consultation.{PROVIDER}.{PATIENT}"
T0 = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)


def at(minutes: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes)


def checked_in() -> m.PatientCheckedIn:
    return m.PatientCheckedIn(
        appointment_id="appt-9", patient_id=PATIENT, consultation_id=CID, timestamp=at()
    )


def queue_update(position: int = 2) -> m.QueueUpdate:
    return m.QueueUpdate(
        title="Queue",
        body="",
        priority="normal",
        timestamp=at(),
        consultation_id=CID,
        position=position,
        estimated_wait_minutes=5,
    )


def joined(provider: str = PROVIDER, minutes: float = 1) -> m.ProviderJoined:
    return m.ProviderJoined(provider_id=provider, timestamp=at(minutes))


def started() -> m.ConsultationStarted:
    return m.ConsultationStarted(provider_id=PROVIDER, timestamp=at(2))


def wrap_up() -> m.WrapUpStarted:
    return m.WrapUpStarted(provider_id=PROVIDER, timestamp=at(3))


def ended(provider: str = PROVIDER) -> m.ConsultationEnded:
    return m.ConsultationEnded(
        provider_id=provider, summary=m.Summary(duration=3, follow_up_required=True), timestamp=at(4)
    )


def cancelled(by: str, reason: m.CancelReason) -> m.ConsultationCancelled:
    return m.ConsultationCancelled(cancelled_by=by, reason=reason, timestamp=at(1))


def invited(who: str = SPECIALIST, by: str = PROVIDER) -> m.ProviderInvited:
    return m.ProviderInvited(invited_provider_id=who, invited_by=by, role="specialist", timestamp=at(2))


def removed(who: str = SPECIALIST, by: str = PROVIDER) -> m.ProviderRemoved:
    return m.ProviderRemoved(provider_id=who, removed_by=by, timestamp=at(3))


def device_status() -> m.DeviceStatus:
    return m.DeviceStatus(camera="pass", microphone="pass", speaker="warn", network="video", timestamp=at())


def patient_side() -> Consultation:
    return Consultation.new(consultation_id=CID, user_id=PATIENT, role="patient", appointment_id="appt-9")


class Feed:
    """Feeds received messages with increasing timetokens."""

    def __init__(self, consultation: Consultation) -> None:
        self.consultation = consultation
        self.timetoken = 1000

    def receive(self, message: lc.StateMessage, publisher: str) -> tuple[lc.Effect, ...]:
        self.timetoken += 10
        self.consultation, effects = transition(
            self.consultation, Received(message, publisher, self.timetoken)
        )
        return effects


def in_state(state: S) -> Consultation:
    """A patient-side consultation driven to ``state`` by the legal path."""
    feed = Feed(patient_side())
    path: list[tuple[lc.StateMessage, str]] = [
        (checked_in(), PATIENT),
        (queue_update(), PROVIDER),
        (joined(), PROVIDER),
        (started(), PROVIDER),
        (wrap_up(), PROVIDER),
    ]
    order = [S.CHECKED_IN, S.WAITING, S.CONNECTING, S.IN_PROGRESS, S.WRAPPING_UP]
    if state is S.SCHEDULED:
        return feed.consultation
    if state is S.COMPLETED:
        feed.receive(ended(), PROVIDER)
        return feed.consultation
    if state is S.CANCELLED:
        feed.receive(cancelled(PATIENT, "patient-left"), PATIENT)
        return feed.consultation
    for (message, publisher), reached in zip(path, order, strict=True):
        feed.receive(message, publisher)
        if reached is state:
            break
    assert feed.consultation.state is state
    return feed.consultation


def apply(consultation: Consultation, message: lc.StateMessage, publisher: str) -> lc.Transition:
    return transition(consultation, Received(message, publisher, consultation.last_timetoken + 1))


def state_changes(effects: tuple[lc.Effect, ...]) -> list[tuple[S, S]]:
    return [
        (e.event.previous, e.event.state)
        for e in effects
        if isinstance(e, Emit) and isinstance(e.event, events.StateChanged)
    ]


# --- the legal path -------------------------------------------------------------------------


def test_a_whole_consultation_goes_through_every_state_in_order() -> None:
    feed = Feed(patient_side())
    seen = [feed.consultation.state]
    for message, publisher in [
        (checked_in(), PATIENT),
        (queue_update(3), PROVIDER),
        (queue_update(1), PROVIDER),
        (joined(), PROVIDER),
        (started(), PROVIDER),
        (wrap_up(), PROVIDER),
        (ended(), PROVIDER),
    ]:
        feed.receive(message, publisher)
        seen.append(feed.consultation.state)
    assert seen == [
        S.SCHEDULED,
        S.CHECKED_IN,
        S.WAITING,
        S.WAITING,
        S.CONNECTING,
        S.IN_PROGRESS,
        S.WRAPPING_UP,
        S.COMPLETED,
    ]
    final = feed.consultation
    assert final.summary == m.Summary(duration=3, follow_up_required=True)
    assert final.queue_position == 1
    assert final.provider_joined_at == at(1)
    assert final.last_timetoken == feed.timetoken


# In the states' declared order, not a set's: test IDs stay the same whatever PYTHONHASHSEED is.
NON_TERMINAL_IN_ORDER = [s for s in S if s in lc.NON_TERMINAL]


@pytest.mark.parametrize(
    ("start", "message", "publisher", "target"),
    [
        (S.SCHEDULED, checked_in(), PATIENT, S.CHECKED_IN),
        (S.CHECKED_IN, queue_update(), PROVIDER, S.WAITING),
        (S.WAITING, queue_update(), PROVIDER, S.WAITING),
        (S.CHECKED_IN, joined(), PROVIDER, S.CONNECTING),
        (S.WAITING, joined(), PROVIDER, S.CONNECTING),
        (S.CONNECTING, started(), PROVIDER, S.IN_PROGRESS),
        (S.CONNECTING, wrap_up(), PROVIDER, S.WRAPPING_UP),
        (S.IN_PROGRESS, wrap_up(), PROVIDER, S.WRAPPING_UP),
        *[(s, ended(), PROVIDER, S.COMPLETED) for s in NON_TERMINAL_IN_ORDER],
        *[(s, cancelled(PATIENT, "patient-left"), PATIENT, S.CANCELLED) for s in NON_TERMINAL_IN_ORDER],
        *[(s, cancelled(PROVIDER, "no-show"), PROVIDER, S.CANCELLED) for s in NON_TERMINAL_IN_ORDER],
        *[(s, device_status(), PATIENT, s) for s in NON_TERMINAL_IN_ORDER],
    ],
)
def test_each_legal_transition(start: S, message: lc.StateMessage, publisher: str, target: S) -> None:
    before = in_state(start)
    after, effects = apply(before, message, publisher)
    assert after.state is target
    assert Persist(after) in effects
    if target is not start:
        assert state_changes(effects) == [(start, target)]
    else:
        assert state_changes(effects) == []
    assert (CloseSession(str(target)) in effects) is target.terminal


def test_completed_and_cancelled_carry_summary_and_reason_in_the_event() -> None:
    _, effects = apply(in_state(S.IN_PROGRESS), ended(), PROVIDER)
    (changed,) = [
        e.event for e in effects if isinstance(e, Emit) and isinstance(e.event, events.StateChanged)
    ]
    assert changed.summary == m.Summary(duration=3, follow_up_required=True)
    _, effects = apply(in_state(S.WAITING), cancelled(PROVIDER, "no-show"), PROVIDER)
    (changed,) = [
        e.event for e in effects if isinstance(e, Emit) and isinstance(e.event, events.StateChanged)
    ]
    assert changed.cancel_reason == "no-show"


def test_queue_updates_and_device_status_are_emitted() -> None:
    _, effects = apply(in_state(S.CHECKED_IN), queue_update(4), PROVIDER)
    assert Emit(events.QueueUpdated(CID, 4, 5)) in effects
    after, effects = apply(in_state(S.WAITING), device_status(), PATIENT)
    assert after.device_status == device_status()
    assert Emit(events.DeviceStatusReported(CID, "pass", "pass", "warn", "video")) in effects


# --- illegal transitions name both states -----------------------------------------------------

LEGAL_FROM = {
    "PATIENT_CHECKED_IN": {S.SCHEDULED},
    "QUEUE_UPDATE": {S.CHECKED_IN, S.WAITING},
    "PROVIDER_JOINED": {S.CHECKED_IN, S.WAITING},
    "CONSULTATION_STARTED": {S.CONNECTING},
    "WRAP_UP_STARTED": {S.CONNECTING, S.IN_PROGRESS},
    "CONSULTATION_ENDED": set(lc.NON_TERMINAL),
    "CONSULTATION_CANCELLED": set(lc.NON_TERMINAL),
    "DEVICE_STATUS": set(lc.NON_TERMINAL),
}
MESSAGES: dict[str, tuple[lc.StateMessage, str, S | None]] = {
    "PATIENT_CHECKED_IN": (checked_in(), PATIENT, S.CHECKED_IN),
    "QUEUE_UPDATE": (queue_update(), PROVIDER, S.WAITING),
    "PROVIDER_JOINED": (joined(), PROVIDER, S.CONNECTING),
    "CONSULTATION_STARTED": (started(), PROVIDER, S.IN_PROGRESS),
    "WRAP_UP_STARTED": (wrap_up(), PROVIDER, S.WRAPPING_UP),
    "CONSULTATION_ENDED": (ended(), PROVIDER, S.COMPLETED),
    "CONSULTATION_CANCELLED": (cancelled(PROVIDER, "provider-cancelled"), PROVIDER, S.CANCELLED),
    "DEVICE_STATUS": (device_status(), PATIENT, None),
}
ILLEGAL = [
    (action, state)
    for action, legal in LEGAL_FROM.items()
    for state in S
    if state not in legal
    # The same ending twice is a duplicate (ignored), not an illegal move.
    and (action, state) not in {("CONSULTATION_ENDED", S.COMPLETED), ("CONSULTATION_CANCELLED", S.CANCELLED)}
]


@pytest.mark.parametrize(("action", "state"), ILLEGAL)
def test_each_illegal_transition_is_refused_naming_both_states(action: str, state: S) -> None:
    message, publisher, target = MESSAGES[action]
    before = in_state(state)
    with pytest.raises(IllegalTransition) as caught:
        apply(before, message, publisher)
    expected_target = target or state
    assert caught.value.from_state is state and caught.value.to_state is expected_target
    assert str(caught.value) == (
        f"illegal-transition: {action} cannot move a consultation from {state} to {expected_target}"
    )


def test_an_ending_seen_twice_is_ignored_not_refused() -> None:
    done = in_state(S.COMPLETED)
    after, effects = apply(done, ended(), PROVIDER)
    assert after.state is S.COMPLETED and effects == (Ignored("duplicate-end", effects[0].text),)  # type: ignore[union-attr]
    gone = in_state(S.CANCELLED)
    after, effects = apply(gone, cancelled(PATIENT, "patient-left"), PATIENT)
    assert after.state is S.CANCELLED and isinstance(effects[0], Ignored)


# --- who may publish what ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "message", "publisher"),
    [
        (S.IN_PROGRESS, ended(PATIENT), PATIENT),  # a patient cannot end a consultation
        (S.CONNECTING, m.ConsultationStarted(provider_id=PATIENT, timestamp=at()), PATIENT),
        (S.IN_PROGRESS, m.WrapUpStarted(provider_id=PATIENT, timestamp=at()), PATIENT),
        (S.WAITING, joined(PATIENT), PATIENT),
        (S.IN_PROGRESS, invited(by=PATIENT), PATIENT),
        (S.IN_PROGRESS, removed(by=PATIENT), PATIENT),
        (S.CHECKED_IN, queue_update(), PATIENT),
        (S.WAITING, device_status(), PROVIDER),
    ],
)
def test_forbidden_publishers_are_refused(state: S, message: lc.StateMessage, publisher: str) -> None:
    before = in_state(state)
    with pytest.raises(Forbidden) as caught:
        apply(before, message, publisher)
    assert caught.value.code == "forbidden"
    assert PATIENT not in str(caught.value) and PROVIDER not in str(caught.value)


@pytest.mark.parametrize(
    ("by", "reason"),
    [
        (PATIENT, "no-show"),
        (PATIENT, "provider-cancelled"),
        (PROVIDER, "patient-left"),
        (PROVIDER, "consent-revoked"),
    ],
)
def test_each_side_cancels_only_with_its_own_reasons(by: str, reason: m.CancelReason) -> None:
    with pytest.raises(Refused) as caught:
        apply(in_state(S.WAITING), cancelled(by, reason), by)
    assert caught.value.code == "forbidden-reason"


@pytest.mark.parametrize(
    ("by", "reason"), [(PATIENT, "consent-revoked"), (PATIENT, "technical"), (PROVIDER, "technical")]
)
def test_shared_and_own_cancel_reasons_are_accepted(by: str, reason: m.CancelReason) -> None:
    after, _ = apply(in_state(S.WAITING), cancelled(by, reason), by)
    assert after.state is S.CANCELLED and after.cancel_reason == reason


def test_a_message_naming_another_sender_than_its_publisher_is_refused() -> None:
    with pytest.raises(Refused) as caught:
        apply(in_state(S.IN_PROGRESS), ended(PROVIDER), PATIENT)
    assert caught.value.code == "forged-sender"
    with pytest.raises(Refused):
        transition(
            patient_side(),
            Published(
                m.PatientCheckedIn(
                    appointment_id="appt-9", patient_id="pt-1", consultation_id=CID, timestamp=at()
                ).model_copy(update={"patient_id": "pt-2"}),
                10,
            ),
        )


def test_unknown_publishers_are_ignored() -> None:
    before = in_state(S.WAITING)
    after, effects = apply(before, joined("dr-stranger"), "dr-stranger")
    assert after.state is S.WAITING and after.roster == before.roster
    assert [type(e) for e in effects] == [Ignored]
    assert effects[0].code == "unknown-publisher"  # type: ignore[union-attr]


def test_messages_for_another_consultation_are_refused() -> None:
    other = m.QueueUpdate(
        title="q",
        body="",
        priority="normal",
        timestamp=at(),
        consultation_id="consultation.dr-lee.pt-2",
        position=1,
        estimated_wait_minutes=1,
    )
    with pytest.raises(Refused) as caught:
        apply(in_state(S.CHECKED_IN), other, PROVIDER)
    assert caught.value.code == "wrong-consultation"


# --- invited providers ------------------------------------------------------------------------


def test_an_invited_provider_joins_chats_and_is_removed_and_then_ignored() -> None:
    feed = Feed(in_state(S.IN_PROGRESS))
    feed.timetoken = feed.consultation.last_timetoken
    effects = feed.receive(invited(), PROVIDER)
    assert feed.consultation.state is S.IN_PROGRESS
    assert feed.consultation.roster.member(SPECIALIST).status is MemberStatus.INVITED  # type: ignore[union-attr]
    assert any(isinstance(e, Emit) and isinstance(e.event, events.RosterChanged) for e in effects)

    effects = feed.receive(joined(SPECIALIST, 2.5), SPECIALIST)
    assert feed.consultation.state is S.IN_PROGRESS  # roster only
    assert feed.consultation.provider_joined_at == at(1)  # the consultation's provider's, unchanged
    member = feed.consultation.roster.member(SPECIALIST)
    assert (
        member is not None and member.status is MemberStatus.JOINED and member.role is RosterRole.SPECIALIST
    )
    assert state_changes(effects) == []

    feed.receive(removed(), PROVIDER)
    assert feed.consultation.roster.member(SPECIALIST).status is MemberStatus.REMOVED  # type: ignore[union-attr]

    before = feed.consultation
    effects = feed.receive(joined(SPECIALIST), SPECIALIST)
    assert feed.consultation.roster == before.roster and feed.consultation.state is S.IN_PROGRESS
    assert effects[0] == Ignored("unknown-publisher", effects[0].text)  # type: ignore[union-attr]


def test_an_invited_provider_cannot_run_the_consultation() -> None:
    feed = Feed(in_state(S.IN_PROGRESS))
    feed.timetoken = feed.consultation.last_timetoken
    feed.receive(invited(), PROVIDER)
    feed.receive(joined(SPECIALIST), SPECIALIST)
    for message in (ended(SPECIALIST), invited("dr-x", SPECIALIST), cancelled(SPECIALIST, "technical")):
        with pytest.raises(Forbidden):
            feed.receive(message, SPECIALIST)


def test_an_uninvited_join_before_the_provider_is_illegal() -> None:
    feed = Feed(in_state(S.IN_PROGRESS))
    feed.timetoken = feed.consultation.last_timetoken
    feed.receive(invited(), PROVIDER)
    with pytest.raises(Refused) as caught:
        feed.receive(invited(), PROVIDER)  # already invited
    assert caught.value.code == "already-member"
    with pytest.raises(Refused) as caught:
        feed.receive(invited(PATIENT), PROVIDER)
    assert caught.value.code == "not-invitable"
    with pytest.raises(IllegalTransition):
        apply(in_state(S.WAITING), invited(), PROVIDER)


def test_the_removed_provider_closes_its_own_session() -> None:
    specialist = Consultation.new(
        consultation_id=CID, user_id=SPECIALIST, role="provider", state=S.IN_PROGRESS
    )
    feed = Feed(specialist)
    feed.receive(invited(), PROVIDER)
    feed.receive(joined(SPECIALIST), SPECIALIST)
    effects = feed.receive(removed(), PROVIDER)
    assert CloseSession("removed") in effects


# --- presence ---------------------------------------------------------------------------------


def test_presence_changes_the_roster_only() -> None:
    before = in_state(S.WAITING)
    after, effects = transition(before, PresenceChanged(PresenceEvent(CID, "join", PROVIDER, 2, 5)))
    assert after.state is S.WAITING and after.last_timetoken == before.last_timetoken
    assert after.roster.member(PROVIDER).present  # type: ignore[union-attr]
    changes = [e.event for e in effects if isinstance(e, Emit)]
    assert changes == [
        events.RosterChanged(CID, (lc.RosterChange(PROVIDER, RosterRole.PROVIDER, ChangeKind.PRESENT),))
    ]
    again, effects = transition(after, PresenceChanged(PresenceEvent(CID, "join", PROVIDER, 2, 6)))
    assert again == after and effects == ()
    other, effects = transition(
        after, PresenceChanged(PresenceEvent("notification.pt-1", "leave", PROVIDER, 1, 7))
    )
    assert other == after and isinstance(effects[0], Ignored)


# --- exactly once, in order -------------------------------------------------------------------


def test_an_own_message_applied_at_publish_is_not_applied_again_from_its_echo() -> None:
    before = in_state(S.WAITING)
    message = device_status()
    applied, effects = transition(before, Published(message, 5000))
    assert Persist(applied) in effects and 5000 in applied.own_timetokens
    # A provider message published earlier (lower timetoken) arrives after our publish: applied.
    late, _ = transition(applied, Received(joined(), PROVIDER, 4990))
    assert late.state is S.CONNECTING
    echo, effects = transition(late, Received(message, PATIENT, 5000))
    assert effects == (Ignored("replay", "already applied"),)
    assert echo.state is S.CONNECTING and echo.last_timetoken == 5000 and echo.own_timetokens == frozenset()


def test_replayed_messages_change_nothing() -> None:
    done = in_state(S.IN_PROGRESS)
    for tt in (done.last_timetoken, done.last_timetoken - 10, 1):
        after, effects = transition(done, Received(joined(), PROVIDER, tt))
        assert after == done
        assert effects == (Ignored("replay", "already applied"),)


def test_a_restart_applies_messages_published_meanwhile_once_in_order() -> None:
    # The patient saved its state while waiting; the provider joined and started meanwhile.
    saved = in_state(S.WAITING)
    history = [
        Received(queue_update(1), PROVIDER, saved.last_timetoken - 5),  # before the save: replay
        Received(joined(), PROVIDER, saved.last_timetoken + 10),
        Received(started(), PROVIDER, saved.last_timetoken + 20),
    ]
    resumed = saved
    for event in history:
        resumed, _ = transition(resumed, event)
    assert resumed.state is S.IN_PROGRESS
    # The live stream then delivers the same messages again: nothing changes.
    for event in history:
        again, _ = transition(resumed, event)
        assert again == resumed


# --- plan: own intentions ---------------------------------------------------------------------


def test_plan_check_in_publishes_on_the_waiting_room_then_notifies_the_provider() -> None:
    first, second = plan(patient_side(), checked_in())
    assert first == Publish("waiting-room.dr-lee", checked_in())
    assert second.channel == "notification.dr-lee"
    assert isinstance(second.message, m.PatientReady) and second.message.consultation_id == CID


def test_plan_refuses_what_the_other_side_would_refuse() -> None:
    with pytest.raises(IllegalTransition):
        plan(in_state(S.COMPLETED), device_status())
    with pytest.raises(Forbidden):
        plan(patient_side(), ended(PATIENT))


def test_plan_early_cancel_also_goes_to_the_waiting_room() -> None:
    message = cancelled(PATIENT, "patient-left")
    publishes = plan(in_state(S.WAITING), message)
    assert [p.channel for p in publishes] == [CID, "waiting-room.dr-lee"]
    assert [p.channel for p in plan(in_state(S.IN_PROGRESS), message)] == [CID]


def test_plan_provider_join_and_invite_notify_the_other_party() -> None:
    provider = replace(in_state(S.WAITING), user_id=PROVIDER, role="provider")
    first, ready = plan(provider, joined())
    assert first.channel == CID and ready.channel == "notification.pt-1"
    assert isinstance(ready.message, m.ProviderReady)
    provider = replace(in_state(S.IN_PROGRESS), user_id=PROVIDER, role="provider")
    first, invite = plan(provider, invited())
    assert invite.channel == "notification.dr-cardio"
    assert isinstance(invite.message, m.ConsultationInvite) and invite.message.role == "specialist"
    (only,) = plan(replace(in_state(S.CHECKED_IN), user_id=PROVIDER, role="provider"), queue_update())
    assert only.channel == "notification.pt-1"


# --- helpers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "minutes"), [(0, 1), (1, 1), (59, 1), (60, 1), (61, 2), (600, 10), (601, 11), (-5, 1)]
)
def test_summary_duration_is_whole_minutes_rounded_up_at_least_one(seconds: int, minutes: int) -> None:
    assert summary_duration(T0, T0 + timedelta(seconds=seconds)) == minutes


def test_new_consultation_validates_its_ids() -> None:
    with pytest.raises(ValueError, match="userId"):
        Consultation.new(consultation_id=CID, user_id="a.b", role="patient")
    with pytest.raises(ValueError, match="consultationId"):
        Consultation.new(consultation_id="consultation.x", user_id="a", role="patient")


def test_the_check_in_marks_where_the_visit_opens_and_keeps_it() -> None:
    opened, _ = transition(patient_side(), Published(checked_in(), 7000))
    assert opened.opened_timetoken == 7000
    later = Feed(opened)
    later.timetoken = 7000
    later.receive(joined(), PROVIDER)
    later.receive(started(), PROVIDER)
    assert later.consultation.opened_timetoken == 7000
    provider = Consultation.new(consultation_id=CID, user_id=PROVIDER, role="provider")
    seen, _ = transition(provider, Received(checked_in(), PATIENT, 6990))
    assert seen.opened_timetoken == 6990


def test_every_state_message_kind_has_its_row_in_the_rules_table() -> None:
    """A new lifecycle action without a row would be refused with a KeyError, not a reason."""
    import typing

    from telehealth_client.consultation import lifecycle
    from telehealth_client.protocol.messages import LifecycleAction, QueueUpdate

    kinds = {*typing.get_args(LifecycleAction), QueueUpdate}
    assert set(lifecycle.RULES) == kinds
    # Only the consultation's own provider moves it out of the waiting room; a guest's join does not.
    assert (
        lifecycle.GUEST_JOIN.to_state is None
        and lifecycle.GUEST_JOIN.from_states == lifecycle.PROVIDER_PRESENT
    )
