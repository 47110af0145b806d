"""The staff identities ``telehealth-agent devstack`` runs with: ``--provider ID[:DEPT]`` and
``--nurse ID[:DEPT]``, checked as the product checks user and department IDs.

FOR DEVELOPMENT AND NEWCOMERS: nothing here runs in production.

Public API:

- ``StaffIdentity(user_id, role, department_id)``.
- ``staff_identities(providers, nurses, kiosk) -> tuple[StaffIdentity, ...]``: the options' values
  in order (providers, then nurses); none given at all: the stack's defaults (provider ``dr-demo``).
  ``IdentityError`` names the option, the value and the reason of the first bad or repeated one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from telehealth_client.protocol.channels import InvalidIdError, validate_id
from telehealth_devstack.clinic.directory import StaffRole
from telehealth_devstack.stack import DEFAULT_DEPARTMENT

DEFAULT_PROVIDERS: Final = ("dr-demo",)


@dataclass(frozen=True)
class StaffIdentity:
    user_id: str
    role: StaffRole
    department_id: str = DEFAULT_DEPARTMENT


class IdentityError(ValueError):
    def __init__(self, option: str, value: str, reason: str) -> None:
        super().__init__(f"{option} {value!r}: {reason}")
        self.option = option
        self.value = value
        self.reason = reason


def _parse(option: str, role: StaffRole, value: str) -> StaffIdentity:
    user_id, separator, department = value.partition(":")
    try:
        validate_id(user_id, "user ID")
        if separator:
            validate_id(department, "department ID")
    except InvalidIdError as exc:
        raise IdentityError(option, value, str(exc)) from None
    return StaffIdentity(user_id, role, department if separator else DEFAULT_DEPARTMENT)


def staff_identities(
    providers: Sequence[str] | None, nurses: Sequence[str] | None, kiosk: str
) -> tuple[StaffIdentity, ...]:
    if not providers and not nurses:
        return tuple(StaffIdentity(user_id, "provider") for user_id in DEFAULT_PROVIDERS)
    given: list[tuple[str, StaffRole, str]] = [("--provider", "provider", value) for value in providers or ()]
    given += [("--nurse", "nurse", value) for value in nurses or ()]
    identities: dict[str, StaffIdentity] = {}
    for option, role, value in given:
        identity = _parse(option, role, value)
        if identity.user_id in identities:
            raise IdentityError(option, value, f"user ID {identity.user_id} is given twice")
        if identity.user_id == kiosk:
            raise IdentityError(option, value, f"user ID {identity.user_id} is the check-in kiosk's")
        identities[identity.user_id] = identity
    return tuple(identities.values())
