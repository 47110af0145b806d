"""The clinic backend stand-in (development and tests only); see ``app`` for the endpoints."""

from .app import CALLER_HEADER, Clinic
from .directory import StaffMember
from .identity import DeviceIdentity
from .pubnub_admin import CONSENT_FIELD

__all__ = ["CALLER_HEADER", "CONSENT_FIELD", "Clinic", "DeviceIdentity", "StaffMember"]
