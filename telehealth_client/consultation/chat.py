"""The consultation's chat: an ordered, de-duplicated log with delivery status and read receipts.

``ChatLog`` is pure: the messages in PubNub timetoken order (our own unsent ones after them, in the
order they were written), each once by its ``id``, with its status (``pending`` until PubNub
gave it a timetoken, ``sent``, or ``failed``) and who has read it (a ``chat-read`` up to a
message marks every message up to it, in timetoken order, as read by the reader).

``ConsultationChat`` runs it for one ``ConsultationSession``: it reads the session's chat
messages (live and from every catch-up, so a message sent while this side was away appears
once), sends through the agent's durable encrypted ``Outbox`` (same ``id`` on every retry), and
wipes the content from memory and from the outbox when the consultation completes or is
cancelled. Events on the hub carry IDs and statuses only, never text.

Public API:

- ``ChatError(field, reason)``: a refused send or receipt; nothing was queued.
- ``ChatEntry`` (frozen): ``id``, ``sender_id``, ``sender_role``, ``text``, ``sent_at``,
  ``timetoken`` (None while pending), ``status``, ``own``, ``failure``.
- ``ChatLog(own_user_id)``: ``entries``, ``get(id)``, ``add_pending``, ``receive``,
  ``mark_sent``, ``mark_failed``, ``apply_read``, ``read_by(id)``, ``newest_id()``, ``clear()``.
- ``ConsultationChat(session, outbox, router, hub, auditor=None)``: ``await start()``,
  ``entries``, ``read_by(id)``, ``await send(text) -> ChatEntry``,
  ``await mark_read(up_to_id=None) -> str | None`` (the receipt's id), ``await aclose(wipe=...)``.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

from telehealth_client import events
from telehealth_client.consultation.lifecycle import publisher_role
from telehealth_client.consultation.roster import RosterRole
from telehealth_client.consultation.session import ConsultationSession, now
from telehealth_client.durable.deliveries import DeliveryRouter
from telehealth_client.protocol import messages
from telehealth_client.protocol.messages import (
    MAX_CHAT_CHARS,
    ChatMessage,
    ChatRead,
    Drop,
    SenderRole,
    encode,
)
from telehealth_client.pubsub.bus import MAX_MESSAGE_BYTES, BusError, Envelope

if TYPE_CHECKING:
    from telehealth_client.durable.outbox import Outbox, Outgoing

log = logging.getLogger(__name__)

ChatStatus = Literal["pending", "sent", "failed"]
CHAT_KIND: Final = "chat"
READ_KIND: Final = "chat-read"


class ChatError(Exception):
    """A chat send or receipt refused; ``field`` and ``reason`` say why (never the text)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ChatAuditor(Protocol):
    """Records the audit events of the chat (IDs only): PHI sent, PHI read."""

    async def message_sent(self, consultation_id: str, message_id: str) -> None: ...

    async def message_read(self, consultation_id: str, up_to_id: str) -> None: ...


@dataclass(frozen=True)
class ChatEntry:
    id: str
    sender_id: str
    sender_role: SenderRole
    text: str
    sent_at: datetime
    timetoken: int | None  # PubNub's, once published; None while pending or failed unsent
    status: ChatStatus
    own: bool
    failure: str | None = None  # a reason code once failed


def _entry(message: ChatMessage, timetoken: int | None, status: ChatStatus, *, own: bool) -> ChatEntry:
    return ChatEntry(
        message.id,
        message.sender_id,
        message.sender_role,
        message.text,
        message.sent_at,
        timetoken,
        status,
        own,
    )


def _sort_key(entry: ChatEntry, sequence: int) -> tuple[int, int]:
    # Unsent messages follow every published one, in the order they were written.
    return (entry.timetoken if entry.timetoken is not None else 1 << 64, sequence)


class ChatLog:
    """The chat, pure: ordered by timetoken, each message once by id, with read receipts."""

    def __init__(self, own_user_id: str) -> None:
        self._own = own_user_id
        self._entries: dict[str, ChatEntry] = {}
        self._sequence: dict[str, int] = {}
        self._order: list[tuple[tuple[int, int], str]] = []
        self._counter = itertools.count()
        self._read_marks: dict[str, int] = {}  # reader -> timetoken of the newest message read

    @property
    def entries(self) -> list[ChatEntry]:
        return [self._entries[message_id] for _, message_id in self._order]

    def get(self, message_id: str) -> ChatEntry | None:
        return self._entries.get(message_id)

    def _place(self, entry: ChatEntry) -> None:
        previous = self._entries.get(entry.id)
        if previous is not None:
            self._order.remove((_sort_key(previous, self._sequence[entry.id]), entry.id))
        sequence = self._sequence.setdefault(entry.id, next(self._counter))
        self._entries[entry.id] = entry
        bisect.insort(self._order, (_sort_key(entry, sequence), entry.id))

    def add_pending(self, message: ChatMessage) -> ChatEntry:
        entry = _entry(message, None, "pending", own=True)
        self._place(entry)
        return entry

    def receive(self, message: ChatMessage, timetoken: int) -> tuple[ChatEntry, bool]:
        """The entry for a message read from the channel, and whether the log changed.

        A message already shown (same id) changes nothing, except our own pending one, which is
        now sent: its echo carries the timetoken PubNub gave it.
        """
        known = self._entries.get(message.id)
        if known is not None:
            if known.status == "sent" or known.sender_id != message.sender_id:
                return known, False
            updated = replace(known, timetoken=timetoken, status="sent", failure=None)
            self._place(updated)
            return updated, True
        entry = _entry(message, timetoken, "sent", own=message.sender_id == self._own)
        self._place(entry)
        return entry, True

    def mark_sent(self, message_id: str, timetoken: int) -> ChatEntry | None:
        """Our publish succeeded; None when there is nothing to change."""
        known = self._entries.get(message_id)
        if known is None or known.status == "sent":
            return None
        updated = replace(known, timetoken=timetoken, status="sent", failure=None)
        self._place(updated)
        return updated

    def mark_failed(self, message_id: str, reason: str) -> ChatEntry | None:
        known = self._entries.get(message_id)
        if known is None or known.status != "pending":
            return None
        updated = replace(known, status="failed", failure=reason)
        self._place(updated)
        return updated

    def apply_read(self, reader_id: str, up_to_id: str) -> Drop | bool:
        """A receipt: True if it moved the reader's mark, False if it was older; a Drop if it names
        no published message of this log."""
        target = self._entries.get(up_to_id)
        if target is None or target.timetoken is None:
            return Drop("upToId", "names no chat message of this consultation")
        if self._read_marks.get(reader_id, 0) >= target.timetoken:
            return False
        self._read_marks[reader_id] = target.timetoken
        return True

    def read_by(self, message_id: str) -> frozenset[str]:
        """Who (other than its sender) has read the message."""
        entry = self._entries.get(message_id)
        if entry is None or entry.timetoken is None:
            return frozenset()
        stamp = entry.timetoken
        return frozenset(
            reader for reader, mark in self._read_marks.items() if mark >= stamp and reader != entry.sender_id
        )

    def newest_id(self) -> str | None:
        """The newest published message (from anyone): what a reader who saw everything read."""
        for _, message_id in reversed(self._order):
            if self._entries[message_id].timetoken is not None:
                return message_id
        return None

    def clear(self) -> None:
        self._entries.clear()
        self._sequence.clear()
        self._order.clear()
        self._read_marks.clear()


def _wire_role(role: RosterRole) -> SenderRole:
    if role is RosterRole.PATIENT:
        return "patient"
    if role is RosterRole.NURSE:
        return "nurse"
    return "provider"  # the consultation's provider and every invited one


def check_text(text: object, channel: str, sender_id: str, size_of: Callable[[str, Any], int]) -> str:
    """The text if it can be sent as a chat message; ChatError naming why not. ``size_of``: the
    bus's ``publish_size`` (what PubNub would count)."""
    if not isinstance(text, str):
        raise ChatError("text", "must be a string")
    if not 1 <= len(text) <= MAX_CHAT_CHARS:
        raise ChatError("text", f"must be 1-{MAX_CHAT_CHARS} characters, got {len(text)}")
    if not text.strip():
        raise ChatError("text", "must not be blank")
    # What PubNub counts is the encrypted body: 4000 characters of emoji do not fit in 32 KiB.
    probe = ChatMessage(
        id=str(uuid.uuid4()), sender_id=sender_id, sender_role="provider", text=text, sent_at=now()
    )
    try:
        size = size_of(channel, encode(probe))
    except BusError as exc:
        raise ChatError("text", exc.reason) from None
    if size > MAX_MESSAGE_BYTES:
        raise ChatError(
            "text", f"is {size} bytes once encrypted, over the {MAX_MESSAGE_BYTES} one message may hold"
        )
    return text


class ConsultationChat:
    def __init__(
        self,
        session: ConsultationSession,
        outbox: Outbox,
        router: DeliveryRouter,
        hub: events.EventHub,
        *,
        auditor: ChatAuditor | None = None,
    ) -> None:
        self._session = session
        self._outbox = outbox
        self._router = router
        self._hub = hub
        self._auditor = auditor
        consultation = session.consultation
        self._cid = consultation.consultation_id
        self._user_id = consultation.user_id
        self._log = ChatLog(consultation.user_id)
        self._removers: list[Callable[[], None]] = []
        self._closed = False

    @property
    def consultation_id(self) -> str:
        return self._cid

    @property
    def entries(self) -> list[ChatEntry]:
        return self._log.entries

    def get(self, message_id: str) -> ChatEntry | None:
        return self._log.get(message_id)

    def read_by(self, message_id: str) -> frozenset[str]:
        return self._log.read_by(message_id)

    # -- start and stop -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the session's chat; show what the outbox still holds for it as pending.

        Call before the session starts, so its first catch-up reaches the chat too.
        """
        for item in self._outbox.pending(self._cid):
            if item.kind == CHAT_KIND:
                decoded = messages.decode(self._cid, item.message, self._user_id)
                if isinstance(decoded, ChatMessage):
                    self._log.add_pending(decoded)
        self._removers.append(self._session.add_message_handler(self._on_message))
        self._removers.append(self._router.register(self._cid, CHAT_KIND, self))
        self._removers.append(self._router.register(self._cid, READ_KIND, self))

    async def aclose(self, *, wipe: bool) -> None:
        """Stop following; with ``wipe`` (the consultation is over) the content leaves memory and
        the outbox. Idempotent."""
        if not self._closed:
            self._closed = True
            for remove in self._removers:
                remove()
            self._removers.clear()
        if wipe:
            self._log.clear()
            unsent = await self._outbox.wipe(self._cid)
            log.info("chat wiped consultation=%s unsent=%d", self._cid, len(unsent))
            self._hub.emit(events.ChatWiped(self._cid))

    # -- sending ------------------------------------------------------------------------------------

    async def send(self, text: str) -> ChatEntry:
        """Queue a message (durable once this returns); it is sent as soon as the bus allows."""
        self._check_open()
        consultation = self._session.consultation
        role = publisher_role(consultation, self._user_id)
        sender_role: SenderRole = consultation.role if role is None else _wire_role(role)
        text = check_text(text, self._cid, self._user_id, self._session.bus.publish_size)
        message = ChatMessage(
            id=str(uuid.uuid4()), sender_id=self._user_id, sender_role=sender_role, text=text, sent_at=now()
        )
        if self._auditor is not None:
            # Audited before it is queued: a kill between the two leaves a record of a message
            # that was never sent (its send() failed), never a message sent without a record.
            await self._auditor.message_sent(self._cid, message.id)
        await self._outbox.put(self._outgoing(message.id, encode(message), CHAT_KIND))
        entry = self._log.add_pending(message)
        log.info("chat queued consultation=%s id=%s", self._cid, message.id)
        self._hub.emit(events.ChatMessageAdded(self._cid, entry.id, entry.sender_id, entry.status))
        return entry

    async def mark_read(self, up_to_id: str | None = None) -> str | None:
        """Tell the others we have read up to ``up_to_id`` (default: the newest message); the
        receipt's id, or None when there is nothing newer to acknowledge."""
        self._check_open()
        target = up_to_id if up_to_id is not None else self._log.newest_id()
        if target is None:
            return None
        outcome = self._log.apply_read(self._user_id, target)
        if isinstance(outcome, Drop):
            raise ChatError(outcome.field, outcome.reason)
        if outcome is False:
            return None
        receipt = ChatRead(id=str(uuid.uuid4()), reader_id=self._user_id, up_to_id=target, read_at=now())
        if self._auditor is not None:
            await self._auditor.message_read(self._cid, target)
        await self._outbox.put(self._outgoing(receipt.id, encode(receipt), READ_KIND))
        self._hub.emit(events.ChatReadUpdated(self._cid, self._user_id, target))
        return receipt.id

    def _outgoing(self, item_id: str, payload: dict[str, object], kind: str) -> Outgoing:
        from telehealth_client.durable.outbox import Outgoing

        return Outgoing(id=item_id, consultation_id=self._cid, channel=self._cid, message=payload, kind=kind)

    def _check_open(self) -> None:
        if self._closed or self._session.closed or self._session.consultation.state.terminal:
            raise ChatError("consultation", "is not under way: the chat is closed")

    # -- the outbox's outcomes (DeliveryRouter recipient) -------------------------------------------

    def delivered(self, item: Outgoing, timetoken: int) -> None:
        if item.kind != CHAT_KIND or self._closed:
            return
        entry = self._log.mark_sent(item.id, timetoken)
        if entry is not None:
            self._hub.emit(events.ChatStatusChanged(self._cid, entry.id, entry.status, None))

    def undeliverable(self, item: Outgoing, reason: str) -> None:
        log.warning(
            "chat not delivered consultation=%s id=%s kind=%s reason=%s",
            self._cid,
            item.id,
            item.kind,
            reason,
        )
        if item.kind != CHAT_KIND or self._closed:
            return
        entry = self._log.mark_failed(item.id, reason)
        if entry is not None:
            self._hub.emit(events.ChatStatusChanged(self._cid, entry.id, entry.status, reason))

    # -- receiving ----------------------------------------------------------------------------------

    async def _on_message(self, message: messages.Message, envelope: Envelope) -> None:
        if envelope.channel != self._cid or not isinstance(message, ChatMessage | ChatRead):
            return
        publisher = envelope.publisher or ""
        role = publisher_role(self._session.consultation, publisher)
        if role is None:
            self._drop(envelope, "publisher", "is not a member of this consultation")
            return
        if isinstance(message, ChatMessage):
            if message.sender_role != _wire_role(role):
                self._drop(envelope, "senderRole", "does not match the sender's role in this consultation")
                return
            entry, changed = self._log.receive(message, envelope.timetoken)
            if not changed:
                return
            if entry.own:
                self._hub.emit(events.ChatStatusChanged(self._cid, entry.id, entry.status, None))
            else:
                self._hub.emit(events.ChatMessageAdded(self._cid, entry.id, entry.sender_id, entry.status))
            return
        outcome = self._log.apply_read(message.reader_id, message.up_to_id)
        if isinstance(outcome, Drop):
            self._drop(envelope, outcome.field, outcome.reason)
        elif outcome:
            self._hub.emit(events.ChatReadUpdated(self._cid, message.reader_id, message.up_to_id))

    def _drop(self, envelope: Envelope, field: str, reason: str) -> None:
        log.warning(
            "chat message dropped consultation=%s timetoken=%d field=%s reason=%s",
            self._cid,
            envelope.timetoken,
            field,
            reason,
        )
