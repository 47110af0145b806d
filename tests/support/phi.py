"""The PHI canary and wire-encryption tests' helpers: marker PHI strings and searches of files,
log records and wire payloads for them.

A marker is searched as raw bytes and in its base64 forms (all three alignments), so PHI stored
"encoded" instead of encrypted is found as well."""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from telehealth_client.audit.trail import store_path
from telehealth_client.logs import JsonFormatter
from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_devstack.stack import DevStack

PNED = b"PNED"


@dataclass(frozen=True)
class Canary:
    """One marker string and a realistic sentence carrying it, as a patient or provider writes."""

    marker: str
    sentence: str

    @classmethod
    def make(cls, template: str) -> Canary:
        marker = "CANARY-" + uuid.uuid4().hex
        return cls(marker, template.format(marker=marker))

    def forms(self) -> list[bytes]:
        """The marker as bytes, and as base64 at each of the three alignments (edges trimmed)."""
        raw = self.marker.encode()
        found = [raw]
        for shift in range(3):
            encoded = base64.b64encode(b"\0" * shift + raw)
            found.append(encoded[4 if shift else 0 : -4])
        return found

    def in_bytes(self, data: bytes) -> bool:
        return any(form in data for form in self.forms())

    def in_text(self, text: str) -> bool:
        return self.in_bytes(text.encode("utf-8", "surrogatepass"))


def every_file(root: Path) -> list[Path]:
    """Every regular file under ``root`` (SQLite ``-wal`` and ``-shm`` files and hidden ones too)."""
    found: list[Path] = []
    for directory, _, names in os.walk(root):
        found.extend(Path(directory, name) for name in names)
    return sorted(path for path in found if path.is_file())


def file_contents(root: Path) -> Iterator[tuple[Path, bytes]]:
    """Each file under ``root`` with its raw bytes (blocking). A file gone between the listing and
    the read is skipped: agents replace files atomically while running, and the content lives on
    under the name it was renamed to."""
    for path in every_file(root):
        try:
            yield path, path.read_bytes()
        except FileNotFoundError:
            continue


def files_holding(root: Path, canaries: Iterable[Canary]) -> list[str]:
    """``path: marker`` for each file under ``root`` whose raw bytes hold a canary (blocking)."""
    markers = list(canaries)
    leaks: list[str] = []
    for path, data in file_contents(root):
        leaks.extend(f"{path}: {c.marker}" for c in markers if c.in_bytes(data))
    return leaks


def files_holding_bytes(root: Path, needles: Iterable[bytes]) -> list[str]:
    """``path`` for each file under ``root`` holding any of ``needles`` (blocking)."""
    wanted = list(needles)
    return [str(path) for path, data in file_contents(root) if any(n in data for n in wanted)]


def audit_store_events(state_dir: Path) -> list[str]:
    """Every event of an agent's audit store, as the JSON text stored (blocking)."""
    uri = f"file:{store_path(state_dir)}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        return [str(row[0]) for row in db.execute("SELECT event FROM records ORDER BY rowid")]


def is_cryptomodule_ciphertext(payload: Any) -> bool:
    """A base64 string whose bytes start with the CryptoModule header ``PNED``."""
    if not isinstance(payload, str):
        return False
    try:
        return base64.b64decode(payload, validate=True).startswith(PNED)
    except ValueError:
        return False


def decrypt(stack: DevStack, payload: Any) -> Any:
    """A wire payload opened with the stack's cipher key (DecryptionError if it is not ciphertext)."""
    return RotatingCryptoModule(stack.keys.cipher_key).decrypt(payload)


class CapturedLogs(logging.Handler):
    """Every log record that reaches the root logger, formatted in full: message, extra fields
    and exception text (the production JSON formatter), so a leak in any of them is found."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._formatter = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self._formatter.format(record))

    def holding(self, canaries: Iterable[Canary]) -> list[str]:
        markers = list(canaries)
        return [line for line in self.lines if any(c.in_text(line) for c in markers)]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
