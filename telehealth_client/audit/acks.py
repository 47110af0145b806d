"""The sink's acknowledgements, kept beside the audit store: ``state_dir/audit-acknowledged.json``.

The audit sink answers each event with the highest sequence it holds for this device with no gap
below it (PROTOCOL.md, "Audit events"). The highest answer seen is kept twice, each MACed with
the device's own key (``ChainKeys.acknowledgement``): in the audit store, and in this small file
outside it. The store is written first, so this file is never ahead of an untouched store: a file
ahead of the store means the store was put back to an older copy, which is detected without
asking the sink. The agent writes it (0) as soon as the device-keyed store exists, so a file that
verifies also proves this device ran the device-keyed trail: a version 2 store found afterwards is
a rollback (``audit_layout``). A missing file counts as nothing acknowledged (the agent writes it
again).

Public API (synchronous: call from the event loop with ``asyncio.to_thread``):
``acknowledgement_path(state_dir)``, ``read_acknowledged(path, keys, device_id) -> int``,
``write_acknowledged(path, keys, device_id, highest_sequence)``; ``AcknowledgementFileError``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Final

from telehealth_client.audit.keys import ChainKeys
from telehealth_client.durable.files import write_atomically

FILE_NAME: Final = "audit-acknowledged.json"
VERSION: Final = 1
_MAX_BYTES: Final = 4096
_FIELDS: Final = frozenset({"version", "deviceId", "highestSequence", "mac"})


class AcknowledgementFileError(Exception):
    """The file is there but cannot be trusted: ``problem`` says why (never a key)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def acknowledgement_path(state_dir: Path) -> Path:
    return Path(state_dir) / FILE_NAME


def read_acknowledged(path: Path, keys: ChainKeys, device_id: str) -> int:
    """The highest sequence the sink acknowledged as this file keeps it; 0 when there is no file.

    AcknowledgementFileError if it is unreadable, of another shape or device, or its MAC fails.
    """
    kept = read_acknowledged_if_present(path, keys, device_id)
    return 0 if kept is None else kept


def read_acknowledged_if_present(path: Path, keys: ChainKeys, device_id: str) -> int | None:
    """As ``read_acknowledged``, None when there is no file. The agent writes the file (0) when
    it begins the device-keyed store, so a file that verifies proves this device ran it."""
    try:
        # Judged by stat first and opened non-blocking: a FIFO or a device there never blocks the
        # start or ``audit verify`` (as config.read_secret_file does for secret files).
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise AcknowledgementFileError(path, "not a regular file (replaced by something else)")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise AcknowledgementFileError(path, "not a regular file (replaced by something else)")
            raw = handle.read(_MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AcknowledgementFileError(path, f"cannot be read ({type(exc).__name__})") from None
    if len(raw) > _MAX_BYTES:
        raise AcknowledgementFileError(path, f"larger than {_MAX_BYTES} bytes: not this agent's file")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise AcknowledgementFileError(path, "not valid JSON (damaged or altered)") from None
    if not isinstance(data, dict) or set(data) != _FIELDS:
        raise AcknowledgementFileError(path, f"must be an object of exactly {', '.join(sorted(_FIELDS))}")
    if data["version"] != VERSION:
        raise AcknowledgementFileError(path, f"version: must be {VERSION}")
    owner, highest, mac = data["deviceId"], data["highestSequence"], data["mac"]
    if not isinstance(owner, str) or not isinstance(mac, str):
        raise AcknowledgementFileError(path, "deviceId and mac: must be strings")
    if not isinstance(highest, int) or isinstance(highest, bool) or highest < 0:
        raise AcknowledgementFileError(path, "highestSequence: must be a whole number, 0 or more")
    if owner != device_id:
        raise AcknowledgementFileError(
            path,
            f"kept for device {owner}, not this device ({device_id}): either another device's file was put "
            "here, or user_id is not this device's ID",
        )
    if not keys.verifies_acknowledgement(device_id, highest, mac):
        raise AcknowledgementFileError(
            path,
            "its MAC does not verify under this device's credential: altered, or written without the key",
        )
    return highest


def write_acknowledged(path: Path, keys: ChainKeys, device_id: str, highest_sequence: int) -> None:
    """Replace the file atomically (0600): the old value or the new one, never half."""
    body = {
        "version": VERSION,
        "deviceId": device_id,
        "highestSequence": highest_sequence,
        "mac": keys.acknowledgement(device_id, highest_sequence),
    }
    write_atomically(path, json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
