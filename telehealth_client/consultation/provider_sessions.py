"""The provider's open consultations: one ``ConsultationSession`` each, its chat, its end.

Each session keeps its state file under ``consultations/{consultationId}``; with durable storage a
``ConsultationChat`` opens beside it (before its catch-up, which feeds it) and is wiped when the
consultation is over (kept when the endpoint only stops); the audit trail records the end of each
one the provider joined. Sessions saved before a restart resume, the provider's own only: an
invited one's token does not outlive the agent.

Public API: ``SessionRegistry(bus, hub, user_id=..., state_dir=..., wildcard=..., durable=...,
auditor=..., denials=..., on_closing=..., on_closed=...)``; ``sessions`` (a copy),
``session(consultation_id)`` and ``chat(consultation_id)`` (``SessionError`` when there is none),
``get``, ``discard``, ``open_count()``, ``joined_count()``, ``await new(consultation)``,
``await resume_saved()``, ``await aclose()`` (each session stopped, its chat kept).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from telehealth_client import events
from telehealth_client.audit.auditor import Auditor
from telehealth_client.consultation import state_file
from telehealth_client.consultation.chat import ConsultationChat
from telehealth_client.consultation.lifecycle import Consultation
from telehealth_client.consultation.session import (
    WILDCARD_STATES,
    ClosedHandler,
    ClosingHandler,
    ConsultationSession,
    DenialHandler,
    SessionError,
)
from telehealth_client.pubsub.bus import Bus

if TYPE_CHECKING:
    from telehealth_client.durability import Durable

log = logging.getLogger(__name__)

CONSULTATIONS_DIR = "consultations"


class SessionRegistry:
    def __init__(
        self,
        bus: Bus,
        hub: events.EventHub,
        *,
        user_id: str,
        state_dir: Path,
        wildcard: str | None,
        durable: Durable | None,
        auditor: Auditor | None,
        denials: DenialHandler,
        on_closing: ClosingHandler,
        on_closed: ClosedHandler,
    ) -> None:
        self._bus = bus
        self._hub = hub
        self._user_id = user_id
        self._state_dir = Path(state_dir) / CONSULTATIONS_DIR
        self._wildcard = wildcard
        self._durable = durable
        self._auditor = auditor
        self._denials = denials
        self._on_closing = on_closing
        self._on_closed = on_closed
        self._sessions: dict[str, ConsultationSession] = {}
        self._chats: dict[str, ConsultationChat] = {}

    @property
    def sessions(self) -> dict[str, ConsultationSession]:
        return dict(self._sessions)

    def session(self, consultation_id: str) -> ConsultationSession:
        session = self._sessions.get(consultation_id)
        if session is None or session.closed:
            raise SessionError("unknown-consultation", "no open consultation with that ID on this endpoint")
        return session

    def chat(self, consultation_id: str) -> ConsultationChat:
        """The chat of an open consultation; SessionError when there is none (or no storage)."""
        self.session(consultation_id)
        chat = self._chats.get(consultation_id)
        if chat is None:
            raise SessionError("no-chat", "this endpoint keeps no chat (no durable storage)")
        return chat

    def get(self, consultation_id: str) -> ConsultationSession | None:
        return self._sessions.get(consultation_id)

    def discard(self, consultation_id: str) -> ConsultationSession | None:
        return self._sessions.pop(consultation_id, None)

    def open_count(self) -> int:
        return sum(1 for s in self._sessions.values() if not s.closed)

    def joined_count(self) -> int:
        """Open consultations past the wildcard's (each lists its own channels)."""
        return sum(
            1 for s in self._sessions.values() if not s.closed and s.consultation.state not in WILDCARD_STATES
        )

    async def new(self, consultation: Consultation) -> ConsultationSession:
        own = consultation.provider_id == self._user_id
        session = ConsultationSession(
            consultation,
            self._bus,
            self._hub,
            state_dir=self._state_dir / consultation.consultation_id,
            on_closed=self._closed,
            on_closing=self._on_closing,
            denials=self._denials,
            wildcard=self._wildcard if own else None,
        )
        self._sessions[consultation.consultation_id] = session
        if self._durable is not None:
            chat = ConsultationChat(
                session, self._durable.outbox, self._durable.router, self._hub, auditor=self._auditor
            )
            await chat.start()  # before the session's catch-up, which feeds it
            self._chats[consultation.consultation_id] = chat
            session.add_close_hook(self._closing_hook(session, chat))
        return session

    def _closing_hook(
        self, session: ConsultationSession, chat: ConsultationChat
    ) -> Callable[[str], Awaitable[None]]:
        async def closing(reason: str) -> None:
            over = reason != "stopped"
            if over and self._auditor is not None and session.consultation.provider_joined_at is not None:
                await self._auditor.safely("session_ended", session.consultation_id, reason)
            await chat.aclose(wipe=over)
            if self._chats.get(session.consultation_id) is chat:
                del self._chats[session.consultation_id]

        return closing

    async def _closed(self, session: ConsultationSession, reason: str) -> None:
        if self._sessions.get(session.consultation_id) is session:
            del self._sessions[session.consultation_id]
        result = self._on_closed(session, reason)
        if result is not None:
            await result

    async def resume_saved(self) -> None:
        directory = self._state_dir
        names = await asyncio.to_thread(
            lambda: sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        )
        for name in names:
            try:
                consultation = await asyncio.to_thread(state_file.load, directory / name)
            except state_file.StateFileError as exc:
                log.error("saved consultation unusable reason=%s", exc.reason)
                continue
            if consultation is None or consultation.state.terminal or consultation.user_id != self._user_id:
                continue
            if consultation.provider_id != self._user_id:
                continue  # an invitation: the invited token does not outlive the agent
            if consultation.consultation_id in self._sessions:
                continue  # resumed by an earlier attempt of the start
            session = await self.new(consultation)
            try:
                await session.start(catch_up=True)
            except BaseException:
                # "stopped" keeps its state file: the start's next attempt resumes it afresh.
                await session.aclose("stopped")
                raise

    async def aclose(self) -> None:
        # Side by side: each waits on the network within the stop's budgets, not one after another.
        await asyncio.gather(*(session.aclose("stopped") for session in list(self._sessions.values())))
