"""Who is calling the clinic: each device credential is bound to one identity.

A provider's or a nurse's cart holds a credential for that one user in that one role. A
patient check-in kiosk serves many patients, so its credential is the ``patient`` role with
no user ID: it may act for any patient, and only as a patient. Everything a caller may do is
decided from its credential's identity, never from what the request claims.
"""

from __future__ import annotations

from dataclasses import dataclass

from telehealth_client.protocol.channels import InvalidIdError, validate_id

from ..grants import ROLES, Role


class NotAllowed(Exception):
    """The caller's device credential may not do this; answered 403 naming the field and reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """The identity a device credential is bound to.

    ``user_id`` None means "any user of ``role``", which only a patient kiosk may be.
    """

    role: Role
    user_id: str | None = None

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        if self.user_id is None:
            if self.role != "patient":
                raise ValueError(f"a {self.role} device credential must be bound to one user ID")
            return
        try:
            validate_id(self.user_id, "user_id")
        except InvalidIdError as exc:
            raise ValueError(f"user_id {exc.reason}") from None

    @classmethod
    def patient_kiosk(cls) -> DeviceIdentity:
        """A check-in kiosk: patient tokens for any patient."""
        return cls("patient")

    def acts_for(self, user_id: str) -> bool:
        """True if this device may act as ``user_id`` (in its own role)."""
        return self.user_id is None or self.user_id == user_id

    def check_token_request(self, user_id: str, role: Role) -> None:
        """NotAllowed unless this device may mint a ``role`` token for ``user_id``."""
        if role != self.role:
            raise NotAllowed("role", f"this device credential may only request {self.role} tokens")
        if not self.acts_for(user_id):
            raise NotAllowed("userId", "this device credential may only act for its own user")

    def check_acts_for(self, user_id: str, field: str = "userId") -> None:
        """NotAllowed unless this device may act for ``user_id``."""
        if not self.acts_for(user_id):
            raise NotAllowed(field, "this device credential may only act for its own user")

    def check_provider_of(self, provider_id: str) -> None:
        """NotAllowed unless this is the device of the provider ``provider_id``."""
        if self.role != "provider":
            raise NotAllowed("Authorization", "only a provider's device credential may revoke access")
        if self.user_id != provider_id:
            raise NotAllowed(
                "consultationChannel", "is not a consultation of this device credential's provider"
            )
