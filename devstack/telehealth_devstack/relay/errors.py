"""Error answers shaped as PubNub's origin shapes them.

Every error is JSON (the Python SDK raises on a body it cannot parse, the JavaScript SDK reads
``content-type`` of every error), and the status code is the one PubNub uses, because both SDKs
derive their error category from it (403 -> access denied, 400 -> bad request).
"""

from __future__ import annotations

from typing import Any

JsonValue = Any


class RelayError(Exception):
    """Raised by a handler; the middleware turns it into the answer."""

    def __init__(self, status: int, body: JsonValue) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def service_error(status: int, message: str, service: str) -> RelayError:
    """PubNub's common error object, e.g. for presence, history, balancer errors."""
    return RelayError(status, {"status": status, "error": True, "service": service, "message": message})


def access_denied(message: str = "Forbidden", payload: dict[str, list[str]] | None = None) -> RelayError:
    """Access Manager's 403 in the shape both SDKs recognise (error, status, message, service)."""
    body: dict[str, JsonValue] = {
        "status": 403,
        "error": True,
        "service": "Access Manager",
        "message": message,
    }
    if payload is not None:
        body["payload"] = payload
    return RelayError(403, body)


def publish_error(status: int, message: str, timetoken: int) -> RelayError:
    """Publish and signal answer errors as an array like their success: ``[0, "Message Too Large", "tt"]``."""
    return RelayError(status, [0, message, str(timetoken)])


def objects_error(status: int, message: str) -> RelayError:
    """App Context's error shape."""
    return RelayError(status, {"status": status, "error": {"message": message, "source": "objects"}})


def detailed_error(
    status: int, message: str, *, source: str, detail: str, location: str, location_type: str
) -> RelayError:
    """Access Manager v3's detailed shape: ``error.message``, ``error.source`` and one ``details`` entry."""
    details = [{"message": detail, "location": location, "locationType": location_type}]
    return RelayError(
        status,
        {
            "status": status,
            "service": "Access Manager",
            "error": {"message": message, "source": source, "details": details},
        },
    )
