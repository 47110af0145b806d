"""Development relay: a PubNub-compatible REST server on loopback, for development and tests only.

It is not a broker to deploy: it exists to run the agent against the real PubNub SDKs offline.
"""

from .clock import ManualClock
from .server import Relay
from .store import FILE_EVENT, OBJECTS_EVENT, StoredMessage

__all__ = ["FILE_EVENT", "OBJECTS_EVENT", "ManualClock", "Relay", "StoredMessage"]
