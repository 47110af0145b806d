import pytest

from telehealth_client.consultation.roster import (
    ChangeKind,
    Member,
    MemberStatus,
    Roster,
    RosterChange,
    RosterError,
    RosterRole,
)
from telehealth_client.pubsub.bus import PresenceEvent

CID = "consultation.dr-lee.pt-1"


def presence(action: str, user: str | None) -> PresenceEvent:
    return PresenceEvent(CID, action, user, 1, 1)


def base() -> Roster:
    return Roster.for_consultation("dr-lee", "pt-1")


def test_a_new_roster_expects_the_patient_and_the_provider() -> None:
    roster = base()
    assert roster.members == (
        Member("pt-1", RosterRole.PATIENT, MemberStatus.EXPECTED),
        Member("dr-lee", RosterRole.PROVIDER, MemberStatus.EXPECTED),
    )
    assert roster.role_of("dr-lee") is RosterRole.PROVIDER
    assert roster.role_of("nobody") is None and roster.member(None) is None


def test_invite_join_remove_report_each_change() -> None:
    roster, changes = base().invite("dr-cardio", RosterRole.SPECIALIST)
    assert changes == (RosterChange("dr-cardio", RosterRole.SPECIALIST, ChangeKind.INVITED),)
    roster, changes = roster.join("dr-cardio")
    assert changes == (RosterChange("dr-cardio", RosterRole.SPECIALIST, ChangeKind.JOINED),)
    assert roster.member("dr-cardio") == Member("dr-cardio", RosterRole.SPECIALIST, MemberStatus.JOINED)
    roster, changes = roster.remove("dr-cardio")
    assert changes == (RosterChange("dr-cardio", RosterRole.SPECIALIST, ChangeKind.REMOVED),)
    assert roster.remove("dr-cardio").changes == ()  # removing twice changes nothing
    with pytest.raises(RosterError) as caught:
        roster.join("dr-cardio")
    assert caught.value.code == "removed"
    # Invited again after removal: a new invitation, possibly in another role.
    roster, changes = roster.invite("dr-cardio", RosterRole.OBSERVER)
    assert roster.member("dr-cardio").role is RosterRole.OBSERVER  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("user", "role", "code"),
    [
        ("pt-1", RosterRole.SPECIALIST, "not-invitable"),
        ("dr-lee", RosterRole.OBSERVER, "not-invitable"),
        ("dr-x", RosterRole.PROVIDER, "bad-role"),
        ("dr-x", RosterRole.NURSE, "bad-role"),
    ],
)
def test_invalid_invitations_are_refused(user: str, role: RosterRole, code: str) -> None:
    with pytest.raises(RosterError) as caught:
        base().invite(user, role)
    assert caught.value.code == code


def test_an_invitation_that_stands_cannot_be_repeated() -> None:
    roster, _ = base().invite("dr-cardio", RosterRole.SPECIALIST)
    with pytest.raises(RosterError, match="already-member"):
        roster.invite("dr-cardio", RosterRole.SECOND_OPINION)


def test_only_members_join_and_only_invited_providers_are_removed() -> None:
    with pytest.raises(RosterError, match="not-invited"):
        base().join("dr-stranger")
    for user in ("pt-1", "dr-lee", "dr-stranger"):
        with pytest.raises(RosterError, match="not-removable"):
            base().remove(user)
    roster, changes = base().join("dr-lee")
    assert changes[0].kind is ChangeKind.JOINED
    assert roster.join("dr-lee").changes == ()  # joining twice changes nothing


def test_presence_marks_members_present_and_absent() -> None:
    roster, changes = base().apply_presence(presence("join", "pt-1"))
    assert changes == (RosterChange("pt-1", RosterRole.PATIENT, ChangeKind.PRESENT),)
    assert roster.member("pt-1").present  # type: ignore[union-attr]
    assert roster.apply_presence(presence("join", "pt-1")).changes == ()
    for action in ("leave", "timeout"):
        gone, changes = roster.apply_presence(presence(action, "pt-1"))
        assert changes == (RosterChange("pt-1", RosterRole.PATIENT, ChangeKind.ABSENT),)
        assert not gone.member("pt-1").present  # type: ignore[union-attr]
        assert gone.member("pt-1").status is MemberStatus.EXPECTED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "event",
    [
        presence("join", "dr-stranger"),
        presence("join", None),
        presence("state-change", "pt-1"),
        presence("interval", "pt-1"),
        presence("leave", "pt-1"),  # not present: nothing to change
    ],
)
def test_presence_of_strangers_and_other_actions_changes_nothing(event: PresenceEvent) -> None:
    assert base().apply_presence(event) == (base(), ())


def test_a_removed_member_is_not_shown_present_again() -> None:
    roster, _ = base().invite("dr-cardio", RosterRole.SPECIALIST)
    roster, _ = roster.apply_presence(presence("join", "dr-cardio"))
    roster, _ = roster.remove("dr-cardio")
    roster, changes = roster.apply_presence(presence("leave", "dr-cardio"))
    assert changes == (RosterChange("dr-cardio", RosterRole.SPECIALIST, ChangeKind.ABSENT),)
    assert roster.apply_presence(presence("join", "dr-cardio")).changes == ()


def test_leave_and_add() -> None:
    roster, changes = base().leave("pt-1")
    assert changes == (RosterChange("pt-1", RosterRole.PATIENT, ChangeKind.LEFT),)
    assert roster.leave("pt-1").changes == () and base().leave("nobody").changes == ()
    roster, changes = base().add("nurse-1", RosterRole.NURSE)
    assert changes == (RosterChange("nurse-1", RosterRole.NURSE, ChangeKind.ADDED),)
    with pytest.raises(RosterError, match="already-member"):
        roster.add("nurse-1", RosterRole.NURSE)
