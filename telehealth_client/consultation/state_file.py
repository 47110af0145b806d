"""The current consultation on disk, so a restarted agent resumes where it was.

Public API (synchronous: call from the event loop with ``asyncio.to_thread``):

- ``save(state_dir, consultation)``: atomic (temporary file in the same directory, fsync,
  rename, fsync of the directory), mode 0600, JSON with a ``version`` field.
- ``load(state_dir) -> Consultation | None``: None when there is no consultation; a file that is
  unreadable, corrupt or of an unknown version raises ``StateFileError`` saying so (the caller
  decides what to do; it never silently starts over).
- ``remove(state_dir)``: at the end of the consultation.
- ``prune(state_dir, before, keep)`` and ``prune_each(parent, before, keep)``: the retention
  (``telehealth_client.retention``): a file left by a consultation that is over (``keep`` says
  which are not: one this endpoint resumes) and last written before ``before`` (seconds since
  the epoch) is removed, and so are a crashed write's temporary files and (``prune_each``) a
  consultation's directory once it has been empty since before then. An unreadable file stays:
  the endpoint names it at every start, and a later version may read it.
- ``read_if_present`` and ``write_atomically`` (with ``disk``, the calls they make) are
  ``durable.files``', here for this module's tests.

The file holds IDs, states, codes and numbers only: no chat text, no names, no free text.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from telehealth_client.consultation.lifecycle import Consultation
from telehealth_client.consultation.roster import Member, MemberStatus, Roster, RosterRole
from telehealth_client.durable.files import (
    disk,
    fsync_directory,
    make_private_directory,
    read_if_present,
    write_atomically,
)
from telehealth_client.protocol.channels import ConsultationChannels, InvalidIdError
from telehealth_client.protocol.messages import (
    CancelReason,
    ConsultationState,
    DeviceStatus,
    Id,
    SenderRole,
    Summary,
    UtcTime,
    encode,
    format_time,
)

__all__ = [
    "StateFileError",
    "disk",
    "load",
    "path_of",
    "prune",
    "prune_each",
    "read_if_present",
    "remove",
    "save",
    "write_atomically",
]

FILE_NAME: Final = "consultation.json"
VERSION: Final = 1


class StateFileError(Exception):
    """The state file exists but cannot be used; the message names the file and the reason."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"consultation state file {path}: {reason}")
        self.path = path
        self.reason = reason


class _Stored(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class _StoredMember(_Stored):
    userId: Id
    role: RosterRole
    status: MemberStatus
    present: bool


class _StoredConsultation(_Stored):
    version: Literal[1]
    consultationId: str
    userId: Id
    role: SenderRole
    appointmentId: Id | None
    departmentId: Id | None
    state: ConsultationState
    roster: tuple[_StoredMember, ...]
    lastTimetoken: int = Field(ge=0)
    ownTimetokens: tuple[int, ...]
    openedTimetoken: int = Field(default=0, ge=0)  # absent in files of agents before it existed
    providerJoinedAt: UtcTime | None
    queuePosition: int | None = Field(ge=1)
    estimatedWaitMinutes: int | None = Field(ge=0)
    deviceStatus: dict[str, Any] | None
    summary: dict[str, Any] | None
    cancelReason: CancelReason | None


def path_of(state_dir: Path) -> Path:
    return Path(state_dir) / FILE_NAME


def _to_json(consultation: Consultation) -> dict[str, Any]:
    joined: datetime | None = consultation.provider_joined_at
    return {
        "version": VERSION,
        "consultationId": consultation.consultation_id,
        "userId": consultation.user_id,
        "role": consultation.role,
        "appointmentId": consultation.appointment_id,
        "departmentId": consultation.department_id,
        "state": str(consultation.state),
        "roster": [
            {"userId": m.user_id, "role": str(m.role), "status": str(m.status), "present": m.present}
            for m in consultation.roster.members
        ],
        "lastTimetoken": consultation.last_timetoken,
        "ownTimetokens": sorted(consultation.own_timetokens),
        "openedTimetoken": consultation.opened_timetoken,
        "providerJoinedAt": None if joined is None else format_time(joined),
        "queuePosition": consultation.queue_position,
        "estimatedWaitMinutes": consultation.estimated_wait_minutes,
        "deviceStatus": None if consultation.device_status is None else encode(consultation.device_status),
        "summary": None if consultation.summary is None else encode(consultation.summary),
        "cancelReason": consultation.cancel_reason,
    }


def _from_json(raw: bytes, data: object, path: Path) -> Consultation:
    if not isinstance(data, dict):
        raise StateFileError(path, "is not a JSON object")
    version = data.get("version")
    if version != VERSION:
        shown = version if isinstance(version, int) and not isinstance(version, bool) else "missing/invalid"
        raise StateFileError(path, f"has unknown version {shown} (this agent reads version {VERSION})")
    try:
        # JSON mode: strict types, and enums from their string values.
        stored = _StoredConsultation.model_validate_json(raw)
        channels = ConsultationChannels.parse(stored.consultationId)
        device = None if stored.deviceStatus is None else DeviceStatus.model_validate(stored.deviceStatus)
        summary = None if stored.summary is None else Summary.model_validate(stored.summary)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "file"
        raise StateFileError(path, f"is corrupt ({where}: {first['type']})") from None
    except InvalidIdError as exc:
        raise StateFileError(path, f"is corrupt ({exc.field}: invalid)") from None
    roster = Roster(tuple(Member(m.userId, m.role, m.status, m.present) for m in stored.roster))
    return Consultation(
        consultation_id=channels.main,
        provider_id=channels.provider_id,
        patient_id=channels.patient_id,
        user_id=stored.userId,
        role=stored.role,
        roster=roster,
        appointment_id=stored.appointmentId,
        department_id=stored.departmentId,
        state=stored.state,
        last_timetoken=stored.lastTimetoken,
        own_timetokens=frozenset(stored.ownTimetokens),
        opened_timetoken=stored.openedTimetoken,
        provider_joined_at=stored.providerJoinedAt,
        queue_position=stored.queuePosition,
        estimated_wait_minutes=stored.estimatedWaitMinutes,
        device_status=device,
        summary=summary,
        cancel_reason=stored.cancelReason,
    )


def save(state_dir: Path, consultation: Consultation) -> None:
    """Write the consultation atomically: the file is the old one or the new one, never half."""
    directory = Path(state_dir)
    body = json.dumps(_to_json(consultation), separators=(",", ":"), sort_keys=True).encode()
    make_private_directory(directory)
    try:
        write_atomically(path_of(directory), body)
    except FileNotFoundError:
        # The directory went between the two steps: the retention removed it, empty for weeks
        # (a provider's next consultation with the same patient reuses its name).
        make_private_directory(directory)
        write_atomically(path_of(directory), body)


def load(state_dir: Path) -> Consultation | None:
    """The saved consultation, None if there is none, or StateFileError if it cannot be used."""
    path = path_of(Path(state_dir))
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(path, f"cannot be read ({type(exc).__name__})") from None
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise StateFileError(path, "is corrupt (not valid JSON)") from None
    return _from_json(raw, data, path)


Keep = Callable[[Consultation], bool]


def prune(state_dir: Path, before: float, keep: Keep) -> bool:
    """Remove the file in ``state_dir`` when its consultation is not one to ``keep`` and it was
    last written before ``before``; True if it was removed. A crashed write's temporary files
    older than that go too."""
    directory = Path(state_dir)
    for stray in directory.glob(f".{FILE_NAME}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if stray.stat().st_mtime < before:
                stray.unlink()
    path = path_of(directory)
    try:
        seen = path.stat()
        if seen.st_mtime >= before:
            return False
        consultation = load(directory)
        if consultation is None or keep(consultation):
            return False
        now = path.stat()
    except (OSError, StateFileError):
        return False
    if (now.st_ino, now.st_mtime_ns) != (seen.st_ino, seen.st_mtime_ns):
        return False  # written again meanwhile (the same consultation ID in use again)
    remove(directory)
    return True


def prune_each(parent: Path, before: float, keep: Keep) -> int:
    """``prune`` in each directory under ``parent`` (one per consultation), and remove each one
    left empty that nothing was written to since before ``before``; how many files went."""
    removed = 0
    try:
        directories = [entry for entry in Path(parent).iterdir() if entry.is_dir() and not entry.is_symlink()]
    except FileNotFoundError:
        return 0
    for directory in directories:
        pruned = prune(directory, before, keep)
        removed += pruned
        with contextlib.suppress(OSError):
            if pruned or directory.stat().st_mtime < before:
                directory.rmdir()  # refused when not empty: a consultation ID in use again stays
    return removed


def remove(state_dir: Path) -> None:
    """Forget the consultation; no file is not an error."""
    directory = Path(state_dir)
    with contextlib.suppress(FileNotFoundError):
        path_of(directory).unlink()
        fsync_directory(directory)
