"""Which emergency alerts this staff endpoint has raised, and how far it read its notifications.

A provider's cart may be off when an escalation is raised: its notification sits unread in
``notification.{userId}`` history. At start the endpoint reads that channel from ``last_read`` on
and alerts for every escalation still open that it was not alerted to, once; this ledger keeps
both across restarts, so a restart never alerts twice and never skips what came while it was off.

On disk: ``alerts.json`` in the state directory (0600, written atomically), IDs and a timetoken
only: ``{"lastRead": int, "alerted": [escalation IDs, oldest first]}``, at most ``MAX_ALERTED``.
A file that cannot be read is logged by path and reason and the ledger starts empty (an alert may
then repeat, which is safer than one never raised).

Public API: ``AlertLedger(state_dir)``; ``await load()``; ``last_read``; ``alerted(id)``,
``alerted_ids``; ``record_alert(id)`` and ``advance(timetoken)`` (saved behind, in order);
``await aclose()`` (the last save done).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Final

from telehealth_client.consultation.state_file import write_atomically

log = logging.getLogger(__name__)

LEDGER_FILE: Final = "alerts.json"
MAX_ALERTED: Final = 1024


class AlertLedger:
    def __init__(self, state_dir: Path) -> None:
        self._path = Path(state_dir) / LEDGER_FILE
        self._alerted: OrderedDict[str, None] = OrderedDict()
        self._last_read = 0
        self._dirty = False
        self._saving: asyncio.Task[None] | None = None  # one write at a time, the newest state last

    @property
    def last_read(self) -> int:
        """The newest notification timetoken this endpoint has read (0: none yet)."""
        return self._last_read

    def alerted(self, escalation_id: str) -> bool:
        return escalation_id in self._alerted

    async def load(self) -> None:
        try:
            raw = await asyncio.to_thread(self._path.read_bytes)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("alert ledger unreadable file=%s reason=%s", self._path, type(exc).__name__)
            return
        try:
            data = json.loads(raw)
            last_read = data["lastRead"]
            alerted = data["alerted"]
            if not isinstance(last_read, int) or isinstance(last_read, bool) or last_read < 0:
                raise ValueError("lastRead: must be a non-negative integer")
            if not isinstance(alerted, list) or not all(isinstance(i, str) for i in alerted):
                raise ValueError("alerted: must be a list of strings")
        except (ValueError, KeyError, TypeError) as exc:
            log.error("alert ledger unusable file=%s reason=%s", self._path, type(exc).__name__)
            return
        self._last_read = last_read
        self._alerted = OrderedDict.fromkeys(alerted[-MAX_ALERTED:])

    @property
    def alerted_ids(self) -> list[str]:
        return list(self._alerted)

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
            body = json.dumps({"lastRead": self._last_read, "alerted": list(self._alerted)}).encode()
            try:
                await asyncio.to_thread(write_atomically, self._path, body)
            except OSError as exc:
                # Kept in memory all the same: only a restart may repeat an alert.
                log.error("alert ledger not saved file=%s reason=%s", self._path, type(exc).__name__)
