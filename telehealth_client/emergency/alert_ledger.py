"""Which emergency alerts this staff endpoint has raised, and how far it read its notifications.

A provider's cart may be off when an escalation is raised: its notification sits unread in
``notification.{userId}`` history. At start the endpoint reads that channel from ``last_read`` on
and alerts for every escalation still open that it was not alerted to, once; this ledger keeps
both across restarts, so a restart never alerts twice and never skips what came while it was off.

It also keeps the notifications read whose escalation the department's channel has not shown
yet (``held``, ID -> priority): the notification may overtake the escalation, and a restart in
between must still alert when the escalation arrives.

On disk: ``alerts.json`` in the state directory (0600, written atomically), IDs, priorities and a
timetoken only: ``{"lastRead": int, "alerted": [escalation IDs, oldest first], "held": {ID:
priority}}``, at most ``MAX_ALERTED`` alerted. A file that cannot be used (unreadable, not this
shape, a ``lastRead`` later than now) is logged by path and reason and the ledger starts empty (an
alert may then repeat, which is safer than one never raised).

Public API: ``AlertLedger(state_dir)``; ``await load()``; ``last_read``; ``alerted(id)``,
``alerted_ids``, ``held``; ``record_alert(id)``, ``advance(timetoken)`` and ``hold(held)`` (saved
behind, in order); ``await aclose()`` (the last save done).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Final

from telehealth_client.durable.files import read_if_present, write_atomically

log = logging.getLogger(__name__)

LEDGER_FILE: Final = "alerts.json"
MAX_ALERTED: Final = 1024
MAX_HELD: Final = 64
_MAX_ID_CHARS: Final = 64
# A timetoken is 10^7 per second since the epoch; a lastRead past tomorrow's is not one we read.
_TIMETOKENS_PER_SECOND: Final = 10_000_000
_FUTURE_SLACK_SECONDS: Final = 86_400


class AlertLedger:
    def __init__(self, state_dir: Path) -> None:
        self._path = Path(state_dir) / LEDGER_FILE
        self._alerted: OrderedDict[str, None] = OrderedDict()
        self._last_read = 0
        self._held: dict[str, str] = {}
        self._dirty = False
        self._saving: asyncio.Task[None] | None = None  # one write at a time, the newest state last

    @property
    def last_read(self) -> int:
        """The newest notification timetoken this endpoint has read (0: none yet)."""
        return self._last_read

    def alerted(self, escalation_id: str) -> bool:
        return escalation_id in self._alerted

    async def load(self) -> None:
        raw = await asyncio.to_thread(read_if_present, self._path, "alert ledger")
        if raw is None:
            return
        try:
            last_read, alerted, held = _parse(raw)
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            reason = str(exc) if isinstance(exc, _LedgerError) else type(exc).__name__
            log.error("alert ledger unusable file=%s reason=%s", self._path, reason)
            return
        self._last_read = last_read
        self._alerted = OrderedDict.fromkeys(alerted[-MAX_ALERTED:])
        self._held = held

    @property
    def alerted_ids(self) -> list[str]:
        return list(self._alerted)

    @property
    def held(self) -> dict[str, str]:
        """Notified escalations not yet seen on the department's channel: ID -> priority."""
        return dict(self._held)

    def hold(self, held: dict[str, str]) -> None:
        """Replace what is held (the endpoint's bounded set); saved behind."""
        self._held = dict(list(held.items())[-MAX_HELD:])
        self._save_soon()

    def record_alert(self, escalation_id: str) -> None:
        """Remember ``escalation_id`` as alerted; saved behind (``aclose`` waits for the save)."""
        self._alerted[escalation_id] = None
        while len(self._alerted) > MAX_ALERTED:
            self._alerted.popitem(last=False)
        self._save_soon()

    def advance(self, timetoken: int) -> None:
        """Notifications up to ``timetoken`` have been read; saved behind."""
        if timetoken > self._last_read:
            self._last_read = timetoken
            self._save_soon()

    async def aclose(self) -> None:
        """Wait for the last save."""
        if self._saving is not None:
            await asyncio.wait({self._saving})

    def _save_soon(self) -> None:
        self._dirty = True
        if self._saving is None or self._saving.done():
            self._saving = asyncio.ensure_future(self._save_while_dirty())

    async def _save_while_dirty(self) -> None:
        while self._dirty:
            self._dirty = False
            body = json.dumps(
                {"lastRead": self._last_read, "alerted": list(self._alerted), "held": self._held}
            ).encode()
            try:
                await asyncio.to_thread(write_atomically, self._path, body)
            except OSError as exc:
                # Kept in memory all the same: only a restart may repeat an alert.
                log.error("alert ledger not saved file=%s reason=%s", self._path, type(exc).__name__)


class _LedgerError(ValueError):
    """The file's shape is wrong: the text names the field, never a value."""


def _short_strings(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS


def _parse(raw: bytes) -> tuple[int, list[str], dict[str, str]]:
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise _LedgerError("not a JSON object")
    last_read, alerted, held = data["lastRead"], data["alerted"], data.get("held", {})
    if not isinstance(last_read, int) or isinstance(last_read, bool) or last_read < 0:
        raise _LedgerError("lastRead: must be a non-negative integer")
    if last_read > (time.time() + _FUTURE_SLACK_SECONDS) * _TIMETOKENS_PER_SECOND:
        raise _LedgerError("lastRead: is later than now")
    if not isinstance(alerted, list) or not all(_short_strings(i) for i in alerted):
        raise _LedgerError("alerted: must be a list of IDs")
    if not isinstance(held, dict) or not all(
        _short_strings(k) and _short_strings(v) for k, v in held.items()
    ):
        raise _LedgerError("held: must map IDs to priorities")
    return last_read, alerted, dict(list(held.items())[-MAX_HELD:])
