"""What stays in the state directory, and for how long: months of uptime on a bounded disk.

``Retention`` makes one pass when the agent starts and another every ``interval_seconds`` (an
owned task, cancelled and awaited at close); every file is read and written in the store's own
thread or ``asyncio.to_thread``, never on the event loop. A pass, with ``before`` = now minus
``retention_days``:

- the audit trail (``AuditTrail.prune``): records the sink acknowledged that were recorded before
  ``before`` leave the file, which gives the space back; the chain then starts from an anchor
  under the head's MAC, so ``telehealth-agent audit verify`` still detects tampering, truncation
  and rollback of what remains. A record the sink has not acknowledged is never pruned.
- the outbox (``Outbox.expire``): items queued before ``before`` end as failed, ``expired``:
  a consultation's chat is of no use once it is over (PROTOCOL.md: its PHI then leaves the
  disk), and no consultation lasts the retention. Then its file gives freed pages back.
- the consultations' state files (``consultation.state_file.prune``): a file of a consultation
  that is over (ended, or one this endpoint does not resume) last written before ``before``, and
  a consultation's directory empty since then. Resumable ones stay, however old.

The hard bound: nothing undelivered is deleted to save space (an expired outbox item is no
longer deliverable). Instead, while what waits for delivery (audit records the sink has not
acknowledged, and the outbox's items) is over ``undelivered_limit_mb``, or the oldest audit
record waiting is older than the retention (the sink unreachable for that long), or a record the
sink refused holds the pruning up, ``warning`` says so: an ERROR log at every pass, and
``on_warning`` (the agent puts it in systemd's STATUS). ``telehealth-agent audit status``
says the same from the files. Nothing logged holds a record's or an item's content.

Public API: ``RetentionPolicy(days, undelivered_limit_bytes, interval_seconds)`` (``from_settings``);
``Retention(trail, outbox, consultation_dir, policy, clock=time.time, on_warning=None)``:
``start()``, ``await prune_now() -> RetentionReport``, ``warning``, ``await aclose()``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, TypeVar

from telehealth_client.audit.trail import AuditTrail, Backlog, PruneReport
from telehealth_client.config import Settings
from telehealth_client.consultation import state_file
from telehealth_client.consultation.lifecycle import Consultation
from telehealth_client.consultation.provider_sessions import CONSULTATIONS_DIR
from telehealth_client.durable.outbox import Outbox
from telehealth_client.logs import describe_exception
from telehealth_client.protocol.messages import format_time
from telehealth_client.tasks import OwnedTasks

log = logging.getLogger(__name__)

T = TypeVar("T")

DAY_SECONDS: Final = 86_400
INTERVAL_SECONDS: Final = 3600.0
MEGABYTE: Final = 1024 * 1024
_TIMETOKENS_PER_SECOND: Final = 10_000_000


@dataclass(frozen=True)
class RetentionPolicy:
    days: int = 30
    undelivered_limit_bytes: int = 64 * MEGABYTE
    interval_seconds: float = INTERVAL_SECONDS

    def __post_init__(self) -> None:
        if isinstance(self.days, bool) or not isinstance(self.days, int) or self.days < 1:
            raise ValueError("retention_days: must be a whole number of days, at least 1")
        if self.undelivered_limit_bytes < 1:
            raise ValueError("undelivered_limit_mb: must be at least 1")
        if not self.interval_seconds > 0:
            raise ValueError("interval_seconds: must be greater than 0")

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(settings.retention_days, settings.undelivered_limit_mb * MEGABYTE)


@dataclass(frozen=True)
class RetentionReport:
    """One pass: what left the disk, what waits, the stores' size after it, and the warning."""

    audit: PruneReport
    outbox_expired: int
    outbox_waiting: int
    outbox_waiting_bytes: int
    outbox_file_bytes: int
    consultation_files: int
    warning: str | None
    failed: tuple[str, ...] = ()  # the stores whose step failed (logged; in the warning)


def resumed(consultation: Consultation) -> bool:
    """A kiosk resumes its consultation until it is over."""
    return not consultation.state.terminal


def resumed_by_provider(consultation: Consultation) -> bool:
    """A provider resumes its own open consultations, never one it was invited to."""
    return not consultation.state.terminal and consultation.provider_id == consultation.user_id


class Retention:
    """``trail`` and ``outbox``: the agent's (opened); ``consultation_dir``: where its endpoint
    keeps consultation state (``state_dir/consultation``, a provider's one directory per
    consultation under it); ``clock``: seconds since the epoch (tests move it on)."""

    def __init__(
        self,
        trail: AuditTrail,
        outbox: Outbox,
        consultation_dir: Path,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], float] = time.time,
        on_warning: Callable[[str | None], object] | None = None,
    ) -> None:
        self._trail = trail
        self._outbox = outbox
        self._consultations = Path(consultation_dir)
        self._policy = policy
        self._clock = clock
        self._on_warning = on_warning
        self._warning: str | None = None
        self._tasks = OwnedTasks()
        self._pass = asyncio.Lock()  # one pass at a time: the loop's and a caller's

    @property
    def warning(self) -> str | None:
        """What is wrong with what waits for delivery, or None."""
        return self._warning

    def start(self) -> None:
        """The first pass now, then one every ``interval_seconds``, in the background."""
        if not self._tasks:
            self._tasks.spawn(self._run(), name="retention")

    async def aclose(self) -> None:
        await self._tasks.cancel_all()

    async def _run(self) -> None:
        while True:
            try:
                await self.prune_now()
            except Exception as exc:  # the next pass tries again; the agent goes on
                log.error("retention pass failed error=%s", describe_exception(exc))
            # The pacing of a periodic job, not a wait for something to happen.
            await asyncio.sleep(self._policy.interval_seconds)

    async def prune_now(self) -> RetentionReport:
        """One pass, as described above."""
        async with self._pass:
            before = self._clock() - self._policy.days * DAY_SECONDS
            failed: list[str] = []
            # Each store on its own: one that fails (a disk error) does not keep the others bounded.
            audit = await self._step(
                failed, "audit store", self._trail.prune(datetime.fromtimestamp(before, UTC))
            )
            outbox = await self._step(failed, "outbox", self._outbox_pass(before))
            files = await self._step(
                failed, "consultation files", asyncio.to_thread(self._prune_consultations, before)
            )
            audit = audit or PruneReport(0, 0, None, None, Backlog(), 0)
            expired, waiting, waiting_bytes, outbox_size = outbox or (0, 0, 0, 0)
            warning = self._judge(audit, waiting, waiting_bytes, before, failed)
            report = RetentionReport(
                audit, expired, waiting, waiting_bytes, outbox_size, files or 0, warning, tuple(failed)
            )
            self._report(report)
            return report

    @staticmethod
    async def _step(failed: list[str], name: str, work: Awaitable[T]) -> T | None:
        try:
            return await work
        except Exception as exc:
            log.error("retention step failed store=%s error=%s", name, describe_exception(exc))
            failed.append(name)
            return None

    async def _outbox_pass(self, before: float) -> tuple[int, int, int, int]:
        """Expire, compact; (expired, waiting, their bytes, the file's bytes)."""
        expired = await self._outbox.expire(int(before * _TIMETOKENS_PER_SECOND))
        try:
            if await self._outbox.compact():
                log.info("outbox compacted")
        except sqlite3.OperationalError as exc:  # busy: the next pass gives the space back
            log.info("outbox not compacted error=%s", describe_exception(exc))
        waiting, waiting_bytes = await self._outbox.backlog()
        return len(expired), waiting, waiting_bytes, await self._outbox.file_bytes()

    def _prune_consultations(self, before: float) -> int:
        removed = int(state_file.prune(self._consultations, before, resumed))
        return removed + state_file.prune_each(
            self._consultations / CONSULTATIONS_DIR, before, resumed_by_provider
        )

    def _judge(
        self, audit: PruneReport, waiting: int, waiting_bytes: int, before: float, failed: list[str]
    ) -> str | None:
        problems = [f"retention pass failed for the {', '.join(failed)} (see the log)"] if failed else []
        backlog = audit.backlog
        undelivered = backlog.bytes + waiting_bytes
        if undelivered > self._policy.undelivered_limit_bytes:
            problems.append(
                f"undelivered data over the limit ({_megabytes(undelivered)} of "
                f"{_megabytes(self._policy.undelivered_limit_bytes)}: {backlog.records} audit records "
                f"the sink has not acknowledged, {waiting} outbox items); kept, never deleted undelivered"
            )
        if backlog.oldest is not None and backlog.oldest.timestamp() < before:
            problems.append(
                f"the audit sink has not acknowledged records since {format_time(backlog.oldest)}, "
                f"over retention_days ({self._policy.days}) ago: {backlog.records} wait "
                "(`telehealth-agent audit status`)"
            )
        if audit.held is not None:
            problems.append(f"audit pruning held at record {audit.held_at}: {audit.held}")
        return "; ".join(problems) or None

    def _report(self, report: RetentionReport) -> None:
        audit = report.audit
        log.info(
            "retention pass audit_pruned=%d audit_waiting=%d audit_waiting_bytes=%d audit_file_bytes=%d "
            "outbox_expired=%d outbox_waiting=%d outbox_file_bytes=%d consultation_files=%d",
            audit.records,
            audit.backlog.records,
            audit.backlog.bytes,
            audit.file_bytes,
            report.outbox_expired,
            report.outbox_waiting,
            report.outbox_file_bytes,
            report.consultation_files,
        )
        if report.warning is not None:
            log.error("storage warning: %s", report.warning)
        elif self._warning is not None:
            log.info("storage warning cleared")
        if report.warning != self._warning:
            self._warning = report.warning
            if self._on_warning is not None:
                try:
                    self._on_warning(report.warning)
                except Exception as exc:
                    log.error("storage warning handler failed error=%s", describe_exception(exc))


def _megabytes(size: int) -> str:
    return f"{size / MEGABYTE:.1f} MB" if size >= MEGABYTE else f"{size // 1024} KB"
