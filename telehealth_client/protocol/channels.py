"""Channel names of PROTOCOL.md and validation of the IDs that go into them.

An ID is 1-64 characters of ``[A-Za-z0-9_-]``. A dot would let an ID forge another
channel name and ``*`` would widen an Access Manager pattern grant, so anything else
is refused at the edge with an error that names the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
PRESENCE_SUFFIX = "-pnpres"


class InvalidIdError(ValueError):
    """An identifier that must not be used in a channel name."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def validate_id(value: object, field: str = "id") -> str:
    """Return ``value`` if it is a valid ID, else raise InvalidIdError naming ``field``."""
    if not isinstance(value, str):
        raise InvalidIdError(field, f"must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidIdError(field, "must not be empty")
    if len(value) > 64:
        raise InvalidIdError(field, f"must be at most 64 characters, got {len(value)}")
    if not ID_PATTERN.fullmatch(value):
        bad = sorted({ch for ch in value if not re.fullmatch(r"[A-Za-z0-9_-]", ch)})
        shown = " ".join(repr(ch) for ch in bad)
        raise InvalidIdError(field, f"may contain only letters, digits, '_' and '-' (found {shown})")
    if value.endswith(PRESENCE_SUFFIX):
        # consultation.dr.x-pnpres would be the presence channel of patient x's consultation.
        raise InvalidIdError(field, f"must not end with '{PRESENCE_SUFFIX}' (a presence channel's suffix)")
    return value


def consultation(provider_id: str, patient_id: str) -> str:
    return f"consultation.{validate_id(provider_id, 'providerId')}.{validate_id(patient_id, 'patientId')}"


def video(consultation_channel: str) -> str:
    return f"{consultation_channel}.video"


def files(consultation_channel: str) -> str:
    return f"{consultation_channel}.files"


@dataclass(frozen=True)
class ScopedChannel:
    """A channel named after one ID: ``{prefix}.{id}``, the ID checked under its wire field's name."""

    prefix: str
    field: str

    def __call__(self, scope_id: str) -> str:
        return f"{self.prefix}.{validate_id(scope_id, self.field)}"


waiting_room: Final = ScopedChannel("waiting-room", "providerId")
queue: Final = ScopedChannel("queue", "departmentId")
notification: Final = ScopedChannel("notification", "userId")
provider_presence: Final = ScopedChannel("presence.providers", "departmentId")
audit: Final = ScopedChannel("audit", "organizationId")
emergency: Final = ScopedChannel("emergency", "departmentId")


def presence(channel: str) -> str:
    return f"{channel}{PRESENCE_SUFFIX}"


@dataclass(frozen=True)
class ConsultationChannels:
    """The channels of one consultation, derived from its two IDs."""

    provider_id: str
    patient_id: str

    @classmethod
    def parse(cls, consultation_id: str) -> ConsultationChannels:
        """Split ``consultation.{providerId}.{patientId}``; raise InvalidIdError otherwise."""
        parts = consultation_id.split(".") if isinstance(consultation_id, str) else []
        if len(parts) != 3 or parts[0] != "consultation":
            raise InvalidIdError("consultationId", "must be 'consultation.{providerId}.{patientId}'")
        return cls(validate_id(parts[1], "providerId"), validate_id(parts[2], "patientId"))

    @property
    def main(self) -> str:
        return consultation(self.provider_id, self.patient_id)

    @property
    def video(self) -> str:
        return video(self.main)

    @property
    def files(self) -> str:
        return files(self.main)
