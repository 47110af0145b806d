"""Who is calling the clinic: each device credential is bound to one identity.

A provider's or a nurse's cart holds a credential for that one user in that one role. A
patient check-in kiosk serves many patients, so its credential is the ``patient`` role with
no user ID: it may act for any patient, and only as a patient. An auditor's credential reads
the audit sink and does nothing else. Everything a caller may do is decided from its
credential's identity, never from what the request claims.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from telehealth_client.protocol.channels import InvalidIdError, validate_id

from ..grants import ROLES, Role

DeviceRole = Literal["patient", "provider", "nurse", "auditor"]
DEVICE_ROLES: tuple[DeviceRole, ...] = (*ROLES, "auditor")


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

    role: DeviceRole
    user_id: str | None = None

    def __post_init__(self) -> None:
        if self.role not in DEVICE_ROLES:
            raise ValueError(f"role must be one of {', '.join(DEVICE_ROLES)}")
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

    @classmethod
    def auditor(cls, user_id: str) -> DeviceIdentity:
        """An auditor: reads the audit sink, nothing else."""
        return cls("auditor", user_id)

    @property
    def is_patient_kiosk(self) -> bool:
        return self.role == "patient" and self.user_id is None

    def acts_for(self, user_id: str) -> bool:
        """True if this device may act as ``user_id`` (in its own role)."""
        return self.user_id is None or self.user_id == user_id

    def _check_not_auditor(self) -> None:
        if self.role == "auditor":
            raise NotAllowed("Authorization", "an auditor's device credential may only read the audit sink")

    def check_token_request(self, user_id: str, role: Role) -> None:
        """NotAllowed unless this device may mint a ``role`` token for ``user_id``."""
        self._check_not_auditor()
        if role != self.role:
            raise NotAllowed("role", f"this device credential may only request {self.role} tokens")
        if not self.acts_for(user_id):
            raise NotAllowed("userId", "this device credential may only act for its own user")

    def check_acts_for(self, user_id: str, field: str = "userId") -> None:
        """NotAllowed unless this device may act for ``user_id``."""
        self._check_not_auditor()
        if not self.acts_for(user_id):
            raise NotAllowed(field, "this device credential may only act for its own user")

    def check_provider_of(self, provider_id: str, doing: str = "revoke access") -> None:
        """NotAllowed unless this is the device of the provider ``provider_id``."""
        if self.role != "provider":
            raise NotAllowed("Authorization", f"only a provider's device credential may {doing}")
        if self.user_id != provider_id:
            raise NotAllowed(
                "consultationChannel", "is not a consultation of this device credential's provider"
            )

    def check_records_consent(self) -> None:
        """NotAllowed unless this device may record a patient's consent: the check-in kiosk only."""
        if not self.is_patient_kiosk:
            raise NotAllowed("Authorization", "only the patient kiosk's device credential may record consent")

    def check_audit_actor(self, user_id: str, role: str) -> None:
        """NotAllowed unless an audit event's ``actor`` is this device's own identity."""
        self._check_not_auditor()
        if role != self.role:
            raise NotAllowed("actor.role", f"must be this device credential's role ({self.role})")
        if not self.acts_for(user_id):
            raise NotAllowed("actor.userId", "must be this device credential's own user")

    def check_reads_audit(self) -> None:
        """NotAllowed unless this is an auditor's device."""
        if self.role != "auditor":
            raise NotAllowed("Authorization", "only an auditor's device credential may read the audit sink")
