"""Who is calling the clinic: each device credential is bound to one identity.

A provider's or a nurse's cart holds a credential for that one user in that one role. A patient
check-in kiosk's credential is the ``patient`` role bound to the kiosk's own device ID: it acts
for patients (any user ID the clinic does not know as staff or as a device) and for its own
device, which preflight and idle device checks use. An auditor's credential reads the audit sink
and does nothing else. Everything a caller may do is decided from its credential's identity,
never from what the request claims.
"""

from __future__ import annotations

from collections.abc import Iterable
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
class KnownIds:
    """The user IDs the clinic knows as someone other than a patient: its staff and its devices.

    A kiosk may act for any other user ID: a patient's is not known in advance.
    """

    staff: frozenset[str]
    devices: frozenset[str]

    @classmethod
    def of(cls, staff: Iterable[str], identities: Iterable[DeviceIdentity]) -> KnownIds:
        return cls(frozenset(staff), frozenset(identity.user_id for identity in identities))

    def why_not_a_patient(self, user_id: str) -> str | None:
        """Why ``user_id`` is not a patient's, or None if it may be one."""
        if user_id in self.staff:
            return "is a staff member's user ID, not a patient's"
        if user_id in self.devices:
            return "is a device's ID, not a patient's"
        return None


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """The identity a device credential is bound to: ``role`` and one ``user_id``.

    For a patient kiosk (role ``patient``) ``user_id`` is the kiosk's own device ID; for a
    provider or nurse its user; for an auditor the auditor's.
    """

    role: DeviceRole
    user_id: str

    def __post_init__(self) -> None:
        if self.role not in DEVICE_ROLES:
            raise ValueError(f"role must be one of {', '.join(DEVICE_ROLES)}")
        if self.user_id is None:  # typed str, but called from untyped code too
            bound_to = "its device ID" if self.role == "patient" else "one user ID"
            raise ValueError(f"a {self.role} device credential must be bound to {bound_to}")
        try:
            validate_id(self.user_id, "user_id")
        except InvalidIdError as exc:
            raise ValueError(f"user_id {exc.reason}") from None

    @classmethod
    def patient_kiosk(cls, device_id: str) -> DeviceIdentity:
        """A check-in kiosk with device ID ``device_id``: patient tokens, its own device checks."""
        return cls("patient", device_id)

    @classmethod
    def auditor(cls, user_id: str) -> DeviceIdentity:
        """An auditor: reads the audit sink, nothing else."""
        return cls("auditor", user_id)

    @property
    def is_patient_kiosk(self) -> bool:
        return self.role == "patient"

    @property
    def device_id(self) -> str | None:
        """The device ID its audit events are recorded under: a cart's user, a kiosk's own ID.
        None for an auditor, which records nothing."""
        return None if self.role == "auditor" else self.user_id

    def _check_not_auditor(self) -> None:
        if self.role == "auditor":
            raise NotAllowed("Authorization", "an auditor's device credential may only read the audit sink")

    def check_token_request(self, user_id: str, role: Role, known: KnownIds) -> None:
        """NotAllowed unless this device may mint a ``role`` token for ``user_id``.

        A kiosk: patient tokens for patients only (not for staff, not for any device, its own
        included: an idle kiosk holds no token). A cart: its own user's only.
        """
        self._check_not_auditor()
        if role != self.role:
            raise NotAllowed("role", f"this device credential may only request {self.role} tokens")
        if self.is_patient_kiosk:
            reason = known.why_not_a_patient(user_id)
            if reason is not None:
                raise NotAllowed("userId", reason)
        elif user_id != self.user_id:
            raise NotAllowed("userId", "this device credential may only act for its own user")

    def check_acts_for(self, user_id: str, known: KnownIds, field: str = "userId") -> None:
        """NotAllowed unless this device may act for ``user_id``: a cart for its own user, a kiosk
        for a patient or its own device ID."""
        self._check_not_auditor()
        if user_id == self.user_id:
            return
        if not self.is_patient_kiosk:
            raise NotAllowed(field, "this device credential may only act for its own user")
        reason = known.why_not_a_patient(user_id)
        if reason is not None:
            raise NotAllowed(field, f"{reason} (a kiosk acts only for patients and its own device ID)")

    def check_device_id(self, device_id: str) -> None:
        """NotAllowed unless ``device_id`` is this credential's own device ID (an audit event's)."""
        self._check_not_auditor()
        if device_id != self.device_id:
            raise NotAllowed("deviceId", "must be this device credential's own device ID")

    def check_reads_head(self, device_id: str) -> None:
        """NotAllowed unless this is ``device_id``'s own credential or an auditor's."""
        if self.role != "auditor" and device_id != self.device_id:
            raise NotAllowed("deviceId", "only the device's own credential or an auditor's may read its head")

    def check_provider_of(self, provider_id: str, doing: str = "revoke access") -> None:
        """NotAllowed unless this is the device of the provider ``provider_id``."""
        if self.role != "provider":
            raise NotAllowed("Authorization", f"only a provider's device credential may {doing}")
        if self.user_id != provider_id:
            raise NotAllowed(
                "consultationChannel", "is not a consultation of this device credential's provider"
            )

    def check_records_consent(self) -> None:
        """NotAllowed unless this device may record a patient's consent: a check-in kiosk only."""
        if not self.is_patient_kiosk:
            raise NotAllowed("Authorization", "only the patient kiosk's device credential may record consent")

    def check_audit_actor(self, user_id: str, role: str, known: KnownIds) -> None:
        """NotAllowed unless an audit event's ``actor`` is one this device acts for, in its role."""
        self._check_not_auditor()
        if role != self.role:
            raise NotAllowed("actor.role", f"must be this device credential's role ({self.role})")
        self.check_acts_for(user_id, known, "actor.userId")

    def check_reads_audit(self) -> None:
        """NotAllowed unless this is an auditor's device."""
        if self.role != "auditor":
            raise NotAllowed("Authorization", "only an auditor's device credential may read the audit sink")
