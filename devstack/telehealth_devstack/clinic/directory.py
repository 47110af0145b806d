"""The clinic's staff directory: each provider and nurse, and the department they belong to.

Token requests are checked against it, so a caller gets its own department's channels only,
whatever department the request names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from telehealth_client.protocol.channels import ConsultationChannels, InvalidIdError, validate_id

from .identity import NotAllowed

StaffRole = Literal["provider", "nurse"]


@dataclass(frozen=True, slots=True)
class StaffMember:
    role: StaffRole
    department_id: str

    def __post_init__(self) -> None:
        if self.role not in ("provider", "nurse"):
            raise ValueError("role must be provider or nurse")
        try:
            validate_id(self.department_id, "department_id")
        except InvalidIdError as exc:
            raise ValueError(f"department_id {exc.reason}") from None


class Directory:
    def __init__(self, members: Mapping[str, StaffMember]) -> None:
        for user_id, member in members.items():
            try:
                validate_id(user_id, "directory user ID")
            except InvalidIdError as exc:
                raise ValueError(f"directory user ID {user_id!r} {exc.reason}") from None
            if not isinstance(member, StaffMember):
                raise TypeError("each directory entry must be a StaffMember")
        self._members = dict(members)

    def user_ids(self) -> frozenset[str]:
        return frozenset(self._members)

    def member(self, user_id: str) -> StaffMember | None:
        return self._members.get(user_id)

    def is_provider(self, user_id: str) -> bool:
        member = self._members.get(user_id)
        return member is not None and member.role == "provider"

    def check_staff_token(
        self, user_id: str, role: StaffRole, department_id: str, consultation: ConsultationChannels | None
    ) -> None:
        """NotAllowed unless ``user_id`` may have a ``role`` token for this department (and consultation).

        A nurse's consultation must be one of a provider in its department. Another provider's
        consultation needs an invitation, which the clinic checks, not the directory.
        """
        member = self._members.get(user_id)
        if member is None or member.role != role:
            raise NotAllowed("userId", f"is not a {role} in the clinic's directory")
        if department_id != member.department_id:
            raise NotAllowed("departmentId", f"is not this {role}'s department")
        if role == "nurse" and consultation is not None:
            provider = self._members.get(consultation.provider_id)
            if provider is None or provider.role != "provider" or provider.department_id != department_id:
                raise NotAllowed(
                    "consultationChannel", "is not a consultation of a provider in this nurse's department"
                )
