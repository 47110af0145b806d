"""App Context UUID metadata, kept in memory and bounded."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from .errors import objects_error

_FIELDS = ("name", "email", "externalId", "profileUrl", "status", "type")


class MetadataLog(Protocol):
    """Where metadata is also written, to outlive the relay (``persistence.StateFiles``)."""

    def put_uuid(self, uuid: str, entry: dict[str, Any]) -> None: ...

    def remove_uuid(self, uuid: str) -> None: ...


@dataclass(slots=True)
class UuidMetadata:
    max_entries: int
    log: MetadataLog | None = None
    _entries: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)

    def restore(self, entries: Iterable[tuple[str, dict[str, Any]]]) -> None:
        """Put back entries kept from an earlier run, least recently set first."""
        for uuid, entry in entries:
            self._entries[uuid] = entry
            self._entries.move_to_end(uuid)
        self._evict()

    def _evict(self) -> None:
        while len(self._entries) > self.max_entries:
            evicted, _ = self._entries.popitem(last=False)
            if self.log is not None:
                self.log.remove_uuid(evicted)

    def get(self, uuid: str) -> dict[str, Any] | None:
        entry = self._entries.get(uuid)
        return dict(entry) if entry is not None else None

    def set(self, uuid: str, body: Any) -> dict[str, Any]:
        """Apply a PATCH body: given fields replace the stored ones, ``custom`` is replaced whole."""
        if not isinstance(body, dict):
            raise objects_error(400, "Request body must be a JSON object.")
        entry = dict(self._entries.get(uuid) or {"id": uuid, **dict.fromkeys(_FIELDS), "custom": None})
        for name in _FIELDS:
            if name in body:
                value = body[name]
                if value is not None and not isinstance(value, str):
                    raise objects_error(400, f"Invalid value for '{name}': must be a string.")
                entry[name] = value
        if "custom" in body:
            entry["custom"] = _check_custom(body["custom"])
        entry["updated"] = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        entry["eTag"] = hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).hexdigest()[:20]
        self._entries[uuid] = entry
        self._entries.move_to_end(uuid)
        if self.log is not None:
            self.log.put_uuid(uuid, entry)
        self._evict()
        return dict(entry)

    def remove(self, uuid: str) -> bool:
        removed = self._entries.pop(uuid, None) is not None
        if removed and self.log is not None:
            self.log.remove_uuid(uuid)
        return removed

    def all(self) -> dict[str, dict[str, Any]]:
        return {uuid: dict(entry) for uuid, entry in self._entries.items()}


def view(entry: dict[str, Any], include: set[str]) -> dict[str, Any]:
    """The object as PubNub answers it: ``custom`` only when asked for with ``include=custom``."""
    shown = {k: v for k, v in entry.items() if k != "custom"}
    if "custom" in include:
        shown["custom"] = entry.get("custom")
    return shown


def _check_custom(custom: Any) -> dict[str, Any] | None:
    # PubNub allows only flat custom objects with scalar values.
    if custom is None:
        return None
    if not isinstance(custom, dict):
        raise objects_error(400, "Invalid value for 'custom': must be an object.")
    for key, value in custom.items():
        if not isinstance(value, str | int | float | bool) and value is not None:
            raise objects_error(400, f"Invalid value for 'custom.{key}': only scalar values are allowed.")
    return dict(custom)
