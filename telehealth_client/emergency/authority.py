"""Who may resolve an escalation (PROTOCOL.md, "Emergency").

A resolution counts only from the escalation's own escalator or a provider on the department's
on-call list (``GET /api/on-call/{departmentId}``); any other is ignored and audited as access
denied. The escalator needs no list; anyone else is decided on the clinic's list, which is asked
for at most one lookup at a time and kept for a while.

Public API:

- ``may_resolve(resolver_id, escalated_by, on_call)``: True or False, or None when the answer
  turns on an on-call list that is not known (``on_call`` None).
- ``OnCallDirectory``: what the clinic client offers (``await on_call(department_id)``).
- ``OnCallRoster(clinic, department_id)``: ``known(max_age_seconds)`` (the list last fetched, if
  no older than that), ``await fetch()`` (one lookup shared by concurrent callers; the clinic's
  error when it did not answer), ``await aclose()``.
- ``RefusalLedger(directory)``: the refused resolutions already audited, by escalation ID and
  timetoken, kept across restarts so a channel history read again is not audited again:
  ``load()``, ``seen(key)``, ``record(key)`` (blocking: call them in a thread).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Final, Protocol

from telehealth_client.durable.files import write_atomically

log = logging.getLogger(__name__)

LEDGER_NAME: Final = "refusals-audited.json"
# Refusals remembered as audited: more than a channel history read at start holds (100).
MAX_REFUSALS_KEPT: Final = 500


class OnCallDirectory(Protocol):
    async def on_call(self, department_id: str) -> list[str]: ...


def may_resolve(resolver_id: str, escalated_by: str, on_call: Collection[str] | None) -> bool | None:
    """Whether ``resolver_id`` may resolve an escalation raised by ``escalated_by``."""
    if resolver_id == escalated_by:
        return True
    if on_call is None:
        return None
    return resolver_id in on_call


class OnCallRoster:
    """The department's on-call providers as the clinic last listed them."""

    def __init__(
        self,
        clinic: OnCallDirectory,
        department_id: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clinic = clinic
        self.department_id = department_id
        self._clock = clock
        self._providers: tuple[str, ...] | None = None
        self._fetched_at = 0.0
        self._lookup: asyncio.Task[tuple[str, ...]] | None = None

    def known(self, max_age_seconds: float) -> frozenset[str] | None:
        if self._providers is None or self._clock() - self._fetched_at > max_age_seconds:
            return None
        return frozenset(self._providers)

    async def fetch(self) -> tuple[str, ...]:
        """The clinic's list now, in its order; a lookup under way is joined, not repeated."""
        if self._lookup is None:
            self._lookup = asyncio.ensure_future(self._fetch_once())
            self._lookup.add_done_callback(self._lookup_done)
        # Shielded: a caller that gives up does not cancel the lookup others wait for.
        return await asyncio.shield(self._lookup)

    async def _fetch_once(self) -> tuple[str, ...]:
        providers = tuple(await self._clinic.on_call(self.department_id))
        self._providers, self._fetched_at = providers, self._clock()
        return providers

    def _lookup_done(self, task: asyncio.Task[tuple[str, ...]]) -> None:
        if self._lookup is task:
            self._lookup = None
        if not task.cancelled():
            task.exception()  # retrieved here: every caller may have given up

    async def aclose(self) -> None:
        lookup, self._lookup = self._lookup, None
        if lookup is not None:
            lookup.cancel()
            await asyncio.gather(lookup, return_exceptions=True)


class RefusalLedger:
    """Keys (``{escalationId}:{timetoken}``) of the refused resolutions already audited."""

    def __init__(self, directory: Path, limit: int = MAX_REFUSALS_KEPT) -> None:
        self._path = Path(directory) / LEDGER_NAME
        self._limit = limit
        self._keys: dict[str, None] = {}  # insertion-ordered: the oldest go first

    def load(self) -> None:
        try:
            keys = json.loads(self._path.read_text())
            if not isinstance(keys, list) or not all(isinstance(key, str) for key in keys):
                raise ValueError("not a list of keys")
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            # Losing it costs at most a second audit event for a refusal read again, never a lost one.
            log.error(
                "refused resolutions ledger unreadable file=%s error=%s", self._path, type(exc).__name__
            )
            return
        self._keys = dict.fromkeys(keys[-self._limit :])

    def seen(self, key: str) -> bool:
        return key in self._keys

    def record(self, key: str) -> None:
        self._keys[key] = None
        while len(self._keys) > self._limit:
            del self._keys[next(iter(self._keys))]
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(self._path, json.dumps(list(self._keys)).encode())
