"""The consultation's state file, written behind the transitions.

The message log (PubNub history) is the record; the state file is a checkpoint of how far this
endpoint has applied it. A transition is applied and announced at once, and the checkpoint
follows: one write at a time, each carrying the newest consultation, so a burst of messages costs
one flush rather than one each (a flush is 4-10 ms on these disks, most of a lifecycle message's
latency otherwise). An agent killed before a write finished resumes from the previous checkpoint
and applies the messages after it again from history: the state is the same, because each
transition is a function of the state and the message; only their announcements repeat.

``flush()`` waits until everything requested so far is on disk: the session's own actions return
only once they are durable. ``on_saved(consultation)`` runs after each write (the ``StateSaved``
event: a test or a supervisor knows from it what a restart resumes from).

Public API: ``Checkpointer(state_dir, on_saved=None)``, ``request(consultation)`` (never blocks),
``await flush() -> bool`` (False when the last write failed; it is retried on the next request),
``await aclose()`` (flushes, then stops the writer; an in-flight write is waited for, never left
to land after the caller removed the file).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from telehealth_client.consultation import state_file
from telehealth_client.consultation.lifecycle import Consultation
from telehealth_client.logs import describe_exception

log = logging.getLogger(__name__)

SavedHandler = Callable[[Consultation], None]


class Checkpointer:
    def __init__(self, state_dir: Path, *, on_saved: SavedHandler | None = None) -> None:
        self._state_dir = Path(state_dir)
        self._on_saved = on_saved
        self._latest: Consultation | None = None
        self._requested = 0  # generation of the newest request
        self._written = 0  # generation of the newest write that reached the disk
        self._attempted = 0  # generation of the newest write tried, successful or not
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    def request(self, consultation: Consultation) -> None:
        """Have ``consultation`` written soon; a newer request replaces an unwritten older one."""
        if self._closed:
            return
        self._latest = consultation
        self._requested += 1
        self._wake.set()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="consultation-checkpoint")

    async def flush(self) -> bool:
        """Wait until every request so far was tried; True when the newest one is on disk."""
        target = self._requested
        if self._writer is None or target == 0:
            return True
        async with self._progress:
            await self._progress.wait_for(lambda: self._attempted >= target)
        return self._written >= target

    async def aclose(self) -> None:
        """Write what is pending, then stop. Idempotent."""
        if self._closed:
            return
        await self.flush()
        self._closed = True
        if self._writer is not None:
            # The writer is idle, awaiting a wake: nothing of it is running in a thread.
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            generation, consultation = self._requested, self._latest
            assert consultation is not None
            # Shielded: a write that has started in its thread finishes even if we are cancelled,
            # and we wait for it, so it can never land after the caller removed the file.
            write = asyncio.ensure_future(asyncio.to_thread(state_file.save, self._state_dir, consultation))
            try:
                await asyncio.shield(write)
                saved = True
            except asyncio.CancelledError:
                await asyncio.gather(write, return_exceptions=True)
                raise
            except Exception as exc:
                saved = False
                log.error(
                    "consultation state not saved consultation=%s error=%s",
                    consultation.consultation_id,
                    describe_exception(exc),
                )
            async with self._progress:
                self._attempted = generation
                if saved:
                    self._written = generation
                self._progress.notify_all()
            if saved and self._on_saved is not None:
                self._on_saved(consultation)
