"""Who a provider's consultations let in besides their patient, until the consultation ends.

A consultation's provider invites other providers (specialist, second opinion, observer) and
assigns nurses; the clinic then issues each of them a token naming the consultation. Every such
access ends with the consultation (PROTOCOL.md, "Who calls what"): the channel
``consultation.{providerId}.{patientId}`` is reused by that pair's next consultation, so a guest
left in would read it. This ledger remembers every guest of every consultation of this endpoint
and revokes their access (clinic ``revoke-access``, which also ends the invitation or assignment)
when the consultation ends or is cancelled, or when the agent starts and finds a consultation it
no longer runs.

A guest is written to disk *before* the clinic is asked to let it in, so an agent killed between
the two still revokes it at its next start (revoking a guest the clinic never let in costs one
``{"revoked": 0}``). Revocations that fail because the clinic is unreachable are retried with
back-off until they succeed or the endpoint stops (the file keeps them for the next start); a
clinic's refusal (4xx other than 401, 408 and 429) is final and logged.

On disk: ``guest-access.json`` in the state directory (0600, written atomically), IDs only:
``{"consultations": {consultationId: [userId, ...]}}``. A file that cannot be used is logged by
path and reason and set aside as ``guest-access.json.unusable`` (its guests then keep their access
until their tokens expire, which the log says).

Public API: ``GuestAccess(state_dir, clinic, on_revoked)``; ``await load()``;
``guests(consultation_id)``; ``await admit(consultation_id, user_id)``;
``await revoke(consultation_id, user_id)`` (now, raising the clinic's error);
``end(consultation_id)`` and ``end_all_except(open_ids)`` (in the background, retried);
``await wait_ended(consultation_id)``; ``await aclose()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Final, Protocol

from telehealth_client.backoff import back_off_delay
from telehealth_client.durable.files import read_if_present, write_atomically
from telehealth_client.protocol.channels import ConsultationChannels, InvalidIdError, validate_id
from telehealth_client.security.clinic_client import ClinicError

log = logging.getLogger(__name__)

LEDGER_FILE: Final = "guest-access.json"
RETRY_MIN_SECONDS: Final = 0.5
RETRY_MAX_SECONDS: Final = 30.0
# A clinic answer that asking again will change: no credential yet, timed out, rate-limited.
_PASSING_STATUSES: Final = frozenset({401, 408, 429})

OnRevoked = Callable[[str, str, int], Awaitable[None]]


class AccessRevoker(Protocol):
    async def revoke_access(self, user_id: str, consultation_channel: str) -> int: ...


def final_refusal(exc: ClinicError) -> bool:
    """True when the clinic answered and asking again will not change it (a 4xx verdict)."""
    status = exc.status
    return status is not None and 400 <= status < 500 and status not in _PASSING_STATUSES


class GuestAccess:
    def __init__(
        self,
        state_dir: Path,
        clinic: AccessRevoker,
        on_revoked: OnRevoked | None = None,
        *,
        retry_min_seconds: float = RETRY_MIN_SECONDS,
        retry_max_seconds: float = RETRY_MAX_SECONDS,
    ) -> None:
        self._path = Path(state_dir) / LEDGER_FILE
        self._clinic = clinic
        self._on_revoked = on_revoked
        self._retry = (retry_min_seconds, retry_max_seconds)
        self._guests: dict[str, list[str]] = {}
        self._save_lock = asyncio.Lock()  # one write at a time, each of the newest state
        self._ending: dict[str, asyncio.Task[None]] = {}

    # -- the ledger ---------------------------------------------------------------------------------

    async def load(self) -> None:
        raw = await asyncio.to_thread(read_if_present, self._path, "guest access ledger")
        if raw is None:
            return
        try:
            self._guests = _parse(raw)
        except (ValueError, RecursionError) as exc:
            reason = str(exc) if isinstance(exc, _LedgerError) else type(exc).__name__
            log.error(
                "guest access ledger unusable file=%s reason=%s (its guests keep access until their "
                "tokens expire)",
                self._path,
                reason,
            )
            await asyncio.to_thread(self._path.replace, self._path.with_name(LEDGER_FILE + ".unusable"))

    def guests(self, consultation_id: str) -> list[str]:
        return list(self._guests.get(consultation_id, ()))

    async def admit(self, consultation_id: str, user_id: str) -> None:
        """Remember ``user_id`` as a guest of the consultation; on disk when this returns."""
        if consultation_id in self._ending:
            raise ValueError("consultationId: the consultation is over; its guests are being revoked")
        listed = self._guests.setdefault(consultation_id, [])
        if user_id not in listed:
            listed.append(user_id)
            await self._save()

    async def revoke(self, consultation_id: str, user_id: str) -> int:
        """Revoke one guest now (a removal); ClinicError if the clinic did not; tokens revoked."""
        revoked = await self._clinic.revoke_access(user_id, consultation_id)
        await self._forget(consultation_id, user_id)
        await self._revoked(consultation_id, user_id, revoked)
        return revoked

    # -- ending -------------------------------------------------------------------------------------

    def end(self, consultation_id: str) -> None:
        """The consultation is over: revoke each of its guests, in the background, until done."""
        if consultation_id in self._ending or not self._guests.get(consultation_id):
            return
        self._ending[consultation_id] = asyncio.ensure_future(self._end(consultation_id))

    def end_all_except(self, open_ids: Iterable[str]) -> None:
        """At start: every consultation this endpoint no longer runs is over for its guests."""
        still_open = set(open_ids)
        for consultation_id in list(self._guests):
            if consultation_id not in still_open:
                self.end(consultation_id)

    async def wait_ended(self, consultation_id: str) -> None:
        """Until every guest of an ended consultation is revoked (at once if none is pending)."""
        task = self._ending.get(consultation_id)
        if task is not None:
            await asyncio.shield(task)

    async def aclose(self) -> None:
        """Stop retrying; what is not revoked yet stays on disk for the next start."""
        tasks = list(self._ending.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._ending.clear()

    async def _end(self, consultation_id: str) -> None:
        try:
            for user_id in self.guests(consultation_id):
                await self._revoke_until_done(consultation_id, user_id)
        finally:
            if self._ending.get(consultation_id) is asyncio.current_task():
                del self._ending[consultation_id]

    async def _revoke_until_done(self, consultation_id: str, user_id: str) -> None:
        failures = 0
        while True:
            try:
                await self.revoke(consultation_id, user_id)
                return
            except ClinicError as exc:
                if final_refusal(exc):
                    log.error(
                        "guest access not revoked consultation=%s error=%s (refused by the clinic)",
                        consultation_id,
                        exc,
                    )
                    await self._forget(consultation_id, user_id)
                    return
                failures += 1
                delay = back_off_delay(failures, *self._retry)
                log.warning(
                    "guest access revocation retried consultation=%s error=%s in=%.1fs",
                    consultation_id,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _revoked(self, consultation_id: str, user_id: str, revoked: int) -> None:
        log.info("guest access revoked consultation=%s tokens=%d", consultation_id, revoked)
        if self._on_revoked is not None:
            await self._on_revoked(consultation_id, user_id, revoked)

    async def _forget(self, consultation_id: str, user_id: str) -> None:
        listed = self._guests.get(consultation_id)
        if listed is None or user_id not in listed:
            return
        listed.remove(user_id)
        if not listed:
            del self._guests[consultation_id]
        await self._save()

    async def _save(self) -> None:
        async with self._save_lock:
            body = json.dumps({"consultations": self._guests}, sort_keys=True).encode()
            await asyncio.to_thread(write_atomically, self._path, body)


class _LedgerError(ValueError):
    """The file's shape is wrong: the text names the field, never a value."""


def _parse(raw: bytes) -> dict[str, list[str]]:
    data = json.loads(raw)
    consultations = data.get("consultations") if isinstance(data, dict) else None
    if not isinstance(consultations, dict):
        raise _LedgerError("consultations: must be an object")
    parsed: dict[str, list[str]] = {}
    for consultation_id, guests in consultations.items():
        if not isinstance(guests, list) or not guests:
            raise _LedgerError("consultations: each must list its guests")
        try:
            ConsultationChannels.parse(consultation_id)
        except InvalidIdError:
            raise _LedgerError("consultations: a key is not a consultation ID") from None
        try:
            parsed[consultation_id] = [validate_id(guest, "guest") for guest in guests]
        except InvalidIdError:
            raise _LedgerError("consultations: a guest is not a user ID") from None
    return parsed
