"""What the user typed for a device, parsed into what the checks open.

Malformed input (index -1, "1.5", an empty name) is a usage error naming the
field; input that is well formed but names nothing present becomes a failing
verdict later, in the check itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

_INTEGER = re.compile(r"[0-9]+")
# Anything a user would read as a number but that is not a plain non-negative integer.
_NUMBERISH = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?0[xX][0-9a-fA-F]+")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_MAX_INDEX = 1023


class DeviceUsageError(ValueError):
    """A device argument that cannot mean anything: the caller must fix it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class CameraSource:
    kind: Literal["index", "device", "file", "url"]
    target: str | int  # int only for "index"

    @property
    def label(self) -> str:
        """How the source appears in reports: URLs lose their credentials and query."""
        if self.kind == "index":
            return f"index {self.target}"
        return redact_url(str(self.target)) if self.kind == "url" else str(self.target)


def parse_index(field: str, text: str) -> int | None:
    """A non-negative device index, None for a non-numeric name; a usage error for bad numbers."""
    stripped = text.strip()
    if _INTEGER.fullmatch(stripped):
        index = int(stripped)
        if index > _MAX_INDEX:
            raise DeviceUsageError(field, f"index {index} is out of range (0-{_MAX_INDEX})")
        return index
    if _NUMBERISH.fullmatch(stripped):
        raise DeviceUsageError(field, f"index must be a non-negative integer, got {text!r}")
    return None


def parse_camera_source(text: str, field: str = "camera") -> CameraSource:
    """``/dev/videoN``, an index, a URL or a file path."""
    if not text.strip():
        raise DeviceUsageError(field, "must not be empty")
    if "\x00" in text:
        raise DeviceUsageError(field, "contains a NUL character")
    index = parse_index(field, text)
    if index is not None:
        return CameraSource("index", index)
    if _URL.match(text):
        if not urlsplit(text).netloc and not text.lower().startswith("file:"):
            raise DeviceUsageError(field, f"URL has no host: {redact_url(text)!r}")
        return CameraSource("url", text)
    if text.startswith("/dev/"):
        return CameraSource("device", text)
    return CameraSource("file", text)


AudioDevice = int | str


def parse_audio_device(text: str, field: str) -> AudioDevice:
    """An audio device index, or a (part of a) device name as sounddevice matches it."""
    if not text.strip():
        raise DeviceUsageError(field, "must not be empty")
    if "\x00" in text:
        raise DeviceUsageError(field, "contains a NUL character")
    index = parse_index(field, text)
    return text.strip() if index is None else index


def redact_url(url: str) -> str:
    """Drop user, password, query and fragment: stream URLs often carry credentials."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<unparsable URL>"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
