"""Who is in a consultation, in which role, with which status, and whether they are present.

Pure data, no I/O. Every operation returns a ``RosterUpdate``: the new roster and the changes it
made (empty when nothing changed), so the patient can be told who joined and who left.

Public API:

- ``Roster.for_consultation(provider_id, patient_id)``: the two expected members.
- ``invite(user_id, role)``, ``join(user_id)``, ``remove(user_id)``, ``leave(user_id)``,
  ``add(user_id, role)`` (a member known by other means, such as a nurse assigned by the clinic),
  ``apply_presence(event)`` (join / leave / timeout of ``pubsub.bus.PresenceEvent``).
- ``member(user_id)``, ``role_of(user_id)``, ``members``.
- ``RosterError``: an operation that makes no sense for that member (its ``code`` is short and
  its text names no user).

Statuses: ``expected`` (patient and provider before they act), ``invited``, ``joined``,
``removed`` (an invited provider taken out: its messages are ignored), ``left``. Presence is
separate: a joined member can be absent for a while (a network drop) and come back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import NamedTuple

from telehealth_client.events import RosterChange  # the event's value type: made here
from telehealth_client.pubsub.bus import PresenceEvent

__all__ = [
    "INVITED_ROLES",
    "ChangeKind",
    "Member",
    "MemberStatus",
    "Roster",
    "RosterChange",
    "RosterError",
    "RosterRole",
    "RosterUpdate",
]


class RosterRole(StrEnum):
    PATIENT = "patient"
    PROVIDER = "provider"  # the consultation's own provider
    SPECIALIST = "specialist"
    SECOND_OPINION = "second-opinion"
    OBSERVER = "observer"
    NURSE = "nurse"

    @property
    def invited(self) -> bool:
        return self in INVITED_ROLES


INVITED_ROLES = frozenset({RosterRole.SPECIALIST, RosterRole.SECOND_OPINION, RosterRole.OBSERVER})


class MemberStatus(StrEnum):
    EXPECTED = "expected"
    INVITED = "invited"
    JOINED = "joined"
    REMOVED = "removed"
    LEFT = "left"


class ChangeKind(StrEnum):
    ADDED = "added"
    INVITED = "invited"
    JOINED = "joined"
    REMOVED = "removed"
    LEFT = "left"
    PRESENT = "present"  # presence join
    ABSENT = "absent"  # presence leave or timeout


@dataclass(frozen=True)
class Member:
    user_id: str
    role: RosterRole
    status: MemberStatus
    present: bool = False


class RosterError(ValueError):
    """An operation refused for a member; ``code`` is a short machine-readable reason."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class RosterUpdate(NamedTuple):
    roster: Roster
    changes: tuple[RosterChange, ...]


@dataclass(frozen=True)
class Roster:
    members: tuple[Member, ...] = ()

    @classmethod
    def for_consultation(cls, provider_id: str, patient_id: str) -> Roster:
        return cls(
            (
                Member(patient_id, RosterRole.PATIENT, MemberStatus.EXPECTED),
                Member(provider_id, RosterRole.PROVIDER, MemberStatus.EXPECTED),
            )
        )

    def member(self, user_id: str | None) -> Member | None:
        for member in self.members:
            if member.user_id == user_id:
                return member
        return None

    def role_of(self, user_id: str | None) -> RosterRole | None:
        member = self.member(user_id)
        return member.role if member else None

    def _with(self, member: Member) -> Roster:
        if self.member(member.user_id) is None:
            return Roster((*self.members, member))
        return Roster(tuple(member if m.user_id == member.user_id else m for m in self.members))

    def _update(self, member: Member, kind: ChangeKind) -> RosterUpdate:
        return RosterUpdate(self._with(member), (RosterChange(member.user_id, member.role, kind),))

    def _unchanged(self) -> RosterUpdate:
        return RosterUpdate(self, ())

    def add(self, user_id: str, role: RosterRole) -> RosterUpdate:
        """A member known by other means (a nurse assigned by the clinic): expected."""
        if self.member(user_id) is not None:
            raise RosterError("already-member", "is already in the roster")
        return self._update(Member(user_id, role, MemberStatus.EXPECTED), ChangeKind.ADDED)

    def invite(self, user_id: str, role: RosterRole) -> RosterUpdate:
        if not role.invited:
            raise RosterError("bad-role", "only specialist, second-opinion or observer can be invited")
        current = self.member(user_id)
        if current is not None:
            if not current.role.invited:
                raise RosterError("not-invitable", "the patient, provider or nurse cannot be invited")
            if current.status in (MemberStatus.INVITED, MemberStatus.JOINED):
                raise RosterError("already-member", "is already invited to this consultation")
        present = current.present if current else False
        return self._update(Member(user_id, role, MemberStatus.INVITED, present), ChangeKind.INVITED)

    def join(self, user_id: str) -> RosterUpdate:
        current = self.member(user_id)
        if current is None:
            raise RosterError("not-invited", "is not in this consultation")
        if current.status is MemberStatus.REMOVED:
            raise RosterError("removed", "was removed from this consultation")
        if current.status is MemberStatus.JOINED:
            return self._unchanged()
        return self._update(replace(current, status=MemberStatus.JOINED), ChangeKind.JOINED)

    def remove(self, user_id: str) -> RosterUpdate:
        current = self.member(user_id)
        if current is None or not current.role.invited:
            raise RosterError("not-removable", "only an invited provider can be removed")
        if current.status is MemberStatus.REMOVED:
            return self._unchanged()
        return self._update(replace(current, status=MemberStatus.REMOVED), ChangeKind.REMOVED)

    def leave(self, user_id: str) -> RosterUpdate:
        current = self.member(user_id)
        if current is None or current.status in (MemberStatus.LEFT, MemberStatus.REMOVED):
            return self._unchanged()
        return self._update(replace(current, status=MemberStatus.LEFT), ChangeKind.LEFT)

    def apply_presence(self, event: PresenceEvent) -> RosterUpdate:
        """Presence of a member on the consultation's channels; strangers change nothing."""
        current = self.member(event.user_id)
        if current is None:
            return self._unchanged()
        if event.action == "join":
            if current.present or current.status is MemberStatus.REMOVED:
                return self._unchanged()
            return self._update(replace(current, present=True), ChangeKind.PRESENT)
        if event.action in ("leave", "timeout"):
            if not current.present:
                return self._unchanged()
            return self._update(replace(current, present=False), ChangeKind.ABSENT)
        return self._unchanged()  # state-change, interval: nothing about who is here
