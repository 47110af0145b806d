"""The clinic backend stand-in (development and tests only); see ``app`` for the endpoints."""

from .app import CALLER_HEADER, Clinic
from .directory import StaffMember
from .identity import DeviceIdentity
from .pubnub_admin import CONSENT_FIELD
from .rate_limit import DEFAULT_PATIENT_TOKEN_LIMIT, RateLimit

__all__ = [
    "CALLER_HEADER",
    "CONSENT_FIELD",
    "DEFAULT_PATIENT_TOKEN_LIMIT",
    "Clinic",
    "DeviceIdentity",
    "RateLimit",
    "StaffMember",
]
