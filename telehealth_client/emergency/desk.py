"""Emergency escalation and resolution, for staff endpoints (a provider's or a nurse's cart).

``EmergencyDesk.escalate`` is the one call the seeds advise: it publishes ``EMERGENCY_ESCALATION``
on ``emergency.{departmentId}`` (the department of the appointment or of this endpoint's
settings, never parsed from the consultation ID), notifies every provider the clinic backend
lists as on call but the one escalating (``EMERGENCY_ESCALATION`` on ``notification.{id}``, with
``pn_apns`` / ``pn_gcm`` push payloads in the unencrypted publish ``meta``: severity and
escalation ID only), and audits it (IDs and severity: the reason stays out of the audit trail).
Every publish goes through the agent's durable outbox, so an escalation that cannot reach PubNub
is retried and reported as not yet ``delivered``. The on-call lookup runs in the background and
is retried with capped back-off until the clinic answers (``notified`` is None until then).

An escalation stays open, across restarts (kept sealed in ``state_dir/emergency``: its reason is
PHI), until ``resolve`` records a resolution (``EMERGENCY_RESOLVED``, audited). The desk also
follows the department's emergency channel: escalations by others are shown, a resolution of an
escalation nobody raised is dropped with its reason.

Who may resolve (``emergency_authority``): the escalation's own escalator, or a provider on the
department's on-call list. ``resolve`` refuses anyone else up front (publishing nothing). From the
channel, a resolution by the escalator is taken at once; any other is decided on the clinic's
list: one fetched within ``ON_CALL_FRESH_SECONDS`` accepts, a refusal needs one fetched within
``REFUSAL_RECHECK_SECONDS`` (a provider may just have come on call). Without such a list the
resolution is held, in channel order (later resolutions of the same escalation wait behind it), and
the lookup is retried with capped back-off until the clinic answers: a clinic outage delays a
rightful resolution, never loses it. A refused resolution (also one whose ``resolvedBy`` is not
its publisher) changes nothing, so the rightful resolver can still resolve; it is audited once as
``ACCESS_DENIED`` (IDs only), also when the channel's history is read again after a restart.
Held resolutions are in memory only: after a restart they come back from the channel's history.

Public API:

- ``EmergencyError(field, reason)``: a refused escalation or resolution; nothing was sent.
- ``Escalation`` (frozen): ``id``, ``consultation_id``, ``department_id``, ``escalated_by``,
  ``severity``, ``reason``, ``timestamp``, ``status`` (active, resolved), ``delivered``,
  ``notified`` (on-call providers notified, or None until the clinic answered),
  ``resolved_by``, ``resolution``, ``resolved_at``.
- ``EmergencyDesk(bus, clinic, outbox, router, hub, user_id=..., department_id=...,
  state_dir=..., sealer=..., auditor=None)``: ``await start()``, ``open``, ``get(id)``,
  ``await escalate(consultation_id, severity, reason, department_id=None)``,
  ``await resolve(escalation_id, resolution)``, ``await aclose()``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from pydantic import ValidationError

from telehealth_client import events
from telehealth_client.audit.auditor import Auditor
from telehealth_client.durable.at_rest import Sealer, SealError
from telehealth_client.durable.deliveries import DeliveryRouter
from telehealth_client.durable.files import write_atomically
from telehealth_client.emergency.authority import (
    OnCallDirectory,
    OnCallRoster,
    RefusalLedger,
    may_resolve,
)
from telehealth_client.logs import describe_exception
from telehealth_client.protocol import channels
from telehealth_client.protocol.channels import InvalidIdError, validate_id
from telehealth_client.protocol.messages import (
    Drop,
    EmergencyEscalation,
    EmergencyNotification,
    EmergencyResolved,
    EmergencySeverity,
    Priority,
    decode,
    emergency_push_meta,
    encode,
    format_time,
    parse_time,
)
from telehealth_client.pubsub.bus import Bus, BusError, Envelope, Subscription
from telehealth_client.stop_budgets import LEAVE_SECONDS, budget
from telehealth_client.tasks import OwnedTasks

if TYPE_CHECKING:
    from telehealth_client.durable.outbox import Outbox, Outgoing

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


ESCALATION_KIND: Final = "emergency"
NOTIFY_KIND: Final = "emergency-notify"
RESOLUTION_KIND: Final = "emergency-resolved"
STORE_NAME: Final = "escalations.sealed"
HISTORY_LIMIT: Final = 100
MAX_TEXT_CHARS: Final = 1000
# Resolved escalations kept in memory (for ``get`` and late replays): a cart runs for months.
MAX_RESOLVED_KEPT: Final = 200
ON_CALL_RETRY_MIN_SECONDS: Final = 0.5
ON_CALL_RETRY_MAX_SECONDS: Final = 30.0
# How old an on-call list may be to accept a resolution, and to refuse one.
ON_CALL_FRESH_SECONDS: Final = 60.0
REFUSAL_RECHECK_SECONDS: Final = 5.0
# Resolutions waiting for the on-call list (one per escalation and resolver): a flood is bounded.
MAX_HELD_RESOLUTIONS: Final = 200
_SEVERITIES: Final = get_args(EmergencySeverity)
_PRIORITY: Final[dict[str, Priority]] = {
    "urgent": "high",
    "critical": "critical",
    "life-threatening": "critical",
}


class EmergencyError(Exception):
    """An escalation or resolution refused; ``field`` and ``reason`` say why (never the text)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Escalation:
    id: str
    consultation_id: str
    department_id: str
    escalated_by: str
    severity: EmergencySeverity
    reason: str  # PHI: shown to staff, kept sealed on disk, never audited or logged
    timestamp: datetime
    status: Literal["active", "resolved"] = "active"
    delivered: bool = False  # the escalation is on the emergency channel
    notified: int | None = None  # on-call providers notified; None until the clinic said who
    resolved_by: str | None = None
    resolution: str | None = None
    resolved_at: datetime | None = None
    own: bool = True
    resolution_delivered: bool = False  # the resolution is on the emergency channel


@dataclass(frozen=True)
class _HeldResolution:
    """A resolution from the channel waiting for the on-call list to be decided."""

    message: EmergencyResolved
    timetoken: int


def _text(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise EmergencyError(field, "must be a string")
    if not 1 <= len(value) <= MAX_TEXT_CHARS or not value.strip():
        raise EmergencyError(field, f"must be 1-{MAX_TEXT_CHARS} characters and not blank")
    return value


def _resolution_item_id(escalation_id: str) -> str:
    """The outbox id of a resolution's publish (the escalation's own id names its escalation)."""
    return str(uuid.uuid5(uuid.UUID(escalation_id), "resolved"))


class EscalationStore:
    """The open escalations this endpoint raised or resolved, sealed, rewritten atomically."""

    def __init__(self, directory: Path, sealer: Sealer) -> None:
        self._path = Path(directory) / STORE_NAME
        self._sealer = sealer
        self._merged: list[Path] = []  # set-aside files read back by load(): gone after the next save

    def _read(self, path: Path) -> list[Escalation] | None:
        """The escalations in ``path``; None when it cannot be read (a wrong key, damage)."""
        try:
            items = json.loads(self._sealer.open(path.read_bytes(), associated=STORE_NAME.encode()))
            return [_from_json(item) for item in items]
        except (SealError, ValueError, TypeError, KeyError, OSError) as exc:
            log.error("open escalations unreadable file=%s error=%s", path, type(exc).__name__)
            return None

    def load(self) -> list[Escalation]:
        """What the store holds, and what earlier unreadable copies hold if they open now.

        A file that cannot be read (started once with a mistyped cipher key) is set aside, never
        overwritten, and read again at every load: a later start with the right key gets it back.
        """
        found: dict[str, Escalation] = {}
        if self._path.exists():
            current = self._read(self._path)
            if current is None:
                aside = self._path.with_name(f"{STORE_NAME}.unreadable-{time.time_ns()}")
                self._path.rename(aside)
                log.error("open escalations set aside file=%s", aside)
            else:
                found.update((e.id, e) for e in current)
        self._merged = []
        for aside in sorted(self._path.parent.glob(f"{STORE_NAME}.unreadable-*")):
            recovered = self._read(aside)
            if recovered is not None:
                for escalation in recovered:
                    found.setdefault(escalation.id, escalation)
                self._merged.append(aside)
        return list(found.values())

    def save(self, escalations: Sequence[Escalation]) -> None:
        directory = self._path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not escalations:
            self._path.unlink(missing_ok=True)
            self._forget_merged()
            return
        body = json.dumps([_to_json(e) for e in escalations]).encode()
        write_atomically(self._path, self._sealer.seal(body, associated=STORE_NAME.encode()))
        self._forget_merged()

    def _forget_merged(self) -> None:
        """Set-aside copies whose escalations the store now holds (or finished) are not needed."""
        for path in self._merged:
            path.unlink(missing_ok=True)
        self._merged = []


def _to_json(escalation: Escalation) -> dict[str, Any]:
    data = asdict(escalation)
    data["timestamp"] = format_time(escalation.timestamp)
    data["resolved_at"] = None if escalation.resolved_at is None else format_time(escalation.resolved_at)
    return data


def _from_json(data: dict[str, Any]) -> Escalation:
    data = dict(data)
    data["timestamp"] = parse_time(data["timestamp"])
    if data.get("resolved_at") is not None:
        data["resolved_at"] = parse_time(data["resolved_at"])
    if data["severity"] not in _SEVERITIES or data["status"] not in ("active", "resolved"):
        raise ValueError("severity or status")
    return Escalation(**data)


class EmergencyDesk:
    def __init__(
        self,
        bus: Bus,
        clinic: OnCallDirectory,
        outbox: Outbox,
        router: DeliveryRouter,
        hub: events.EventHub,
        *,
        user_id: str,
        department_id: str,
        state_dir: Path,
        sealer: Sealer,
        auditor: Auditor | None = None,
        retry_min_seconds: float = ON_CALL_RETRY_MIN_SECONDS,
        retry_max_seconds: float = ON_CALL_RETRY_MAX_SECONDS,
    ) -> None:
        self._bus = bus
        self._clinic = clinic
        self._outbox = outbox
        self._router = router
        self._hub = hub
        self.user_id = validate_id(user_id, "userId")
        self.department_id = validate_id(department_id, "departmentId")
        self._store = EscalationStore(Path(state_dir) / "emergency", sealer)
        self._roster = OnCallRoster(clinic, self.department_id)
        self._refusals = RefusalLedger(Path(state_dir) / "emergency")
        # By escalation ID, in channel order; decided by one task once the clinic lists who is on call.
        self._held: dict[str, list[_HeldResolution]] = {}
        self._deciding = False
        self._auditor = auditor
        self._retry = (retry_min_seconds, retry_max_seconds)
        self._escalations: dict[str, Escalation] = {}
        self._lock = asyncio.Lock()
        self._announced: dict[str, Escalation] = {}  # the state last announced, by escalation id
        self._subscription: Subscription | None = None
        self._removers: list[Callable[[], None]] = []
        self._tasks = OwnedTasks()  # on-call lookups: cancelled at close
        self._saves = OwnedTasks()  # short and needed: finished at close
        # Told every escalation as it changes (the provider endpoint confirms alerts with it).
        self.listeners: list[Callable[[Escalation], None]] = []

    # -- state --------------------------------------------------------------------------------------

    @property
    def open(self) -> list[Escalation]:
        """Active escalations, oldest first (own and others' on this department's channel)."""
        active = [e for e in self._escalations.values() if e.status == "active"]
        return sorted(active, key=lambda e: e.timestamp)

    def get(self, escalation_id: str) -> Escalation | None:
        return self._escalations.get(escalation_id)

    # -- start and stop -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Restore own open escalations, follow the department's channel, read its recent history."""
        for kind in (ESCALATION_KIND, NOTIFY_KIND, RESOLUTION_KIND):
            self._removers.append(self._router.register("", kind, self))
        # Open before anything is read from the channel: the relay may be out of reach.
        await asyncio.to_thread(self._refusals.load)
        for escalation in await asyncio.to_thread(self._store.load):
            self._escalations[escalation.id] = escalation
            self._emit(escalation)
        channel = channels.emergency(self.department_id)
        self._subscription = await self._bus.subscribe([channel], self._on_message)
        try:
            history = await self._bus.history(channel, limit=HISTORY_LIMIT)
        except BusError as exc:
            log.warning("emergency history not read channel=%s reason=%s", channel, exc.reason)
            history = []
        async with self._lock:
            for envelope in history:
                await self._receive_locked(envelope, live=False)
            await self._requeue_locked()
        for escalation in list(self._escalations.values()):
            if escalation.own and escalation.status == "active" and escalation.notified is None:
                self._spawn(self._notify_on_call(escalation), "emergency-on-call")

    async def _requeue_locked(self) -> None:
        """Queue again what this desk published and the channel has not shown.

        A stopped process may have saved an escalation (or a resolution) and died before the
        outbox took it, or the outbox may have sent it before this desk was there to hear. The
        same outbox id makes a repeat a no-op while the outbox still holds it; one sent before
        may go out twice, and every desk keeps an escalation once by its id.
        """
        for escalation in list(self._escalations.values()):
            if escalation.own and escalation.status == "active" and not escalation.delivered:
                await self._outbox.put(self._escalation_item(escalation))
            elif escalation.status == "resolved" and not escalation.resolution_delivered:
                await self._outbox.put(self._resolution_item(escalation))

    async def aclose(self) -> None:
        for remove in self._removers:
            remove()
        self._removers.clear()
        await self._tasks.cancel_all()
        await self._roster.aclose()
        # A delivery just reported must reach the file, or the next start would send it again.
        await self._saves.finish()
        if self._subscription is not None:
            try:
                async with asyncio.timeout(budget(LEAVE_SECONDS)):  # a stop never waits longer on the network
                    await self._subscription.close()
            except Exception as exc:
                log.info("emergency unsubscribe failed error=%s", describe_exception(exc))
            self._subscription = None

    def _spawn(self, coroutine: Any, name: str) -> None:
        self._tasks.spawn(coroutine, name)

    # -- escalate -----------------------------------------------------------------------------------

    async def escalate(
        self,
        consultation_id: str,
        severity: str,
        reason: str,
        *,
        department_id: str | None = None,
    ) -> Escalation:
        """Escalate now: durable (on disk, audited, queued) when this returns."""
        try:
            parsed = channels.ConsultationChannels.parse(consultation_id)
        except InvalidIdError as exc:
            reason = exc.reason if exc.field == "consultationId" else f"{exc.field} {exc.reason}"
            raise EmergencyError("consultationId", reason) from None
        try:
            department = validate_id(
                self.department_id if department_id is None else department_id, "departmentId"
            )
        except InvalidIdError as exc:
            raise EmergencyError(exc.field, exc.reason) from None
        if department != self.department_id:
            # This cart's token writes only its own department's emergency channel: an escalation
            # elsewhere could never be delivered, and must not look raised.
            raise EmergencyError("departmentId", f"must be this cart's department ({self.department_id})")
        if not isinstance(severity, str) or severity not in _SEVERITIES:
            raise EmergencyError("severity", "must be urgent, critical or life-threatening")
        reason = _text(reason, "reason")
        message = EmergencyEscalation(
            id=str(uuid.uuid4()),
            consultation_id=parsed.main,
            escalated_by=self.user_id,
            severity=severity,  # type: ignore[arg-type]  # checked against the literal above
            reason=reason,
            timestamp=_now(),
        )
        escalation = Escalation(
            message.id,
            message.consultation_id,
            department,
            self.user_id,
            message.severity,
            reason,
            message.timestamp,
        )
        async with self._lock:
            self._escalations[escalation.id] = escalation
            await self._save_locked()
        if self._auditor is not None:
            await self._auditor.emergency_escalated(
                escalation.id, escalation.consultation_id, department, escalation.severity
            )
        await self._outbox.put(self._escalation_item(escalation))
        log.warning(
            "emergency escalated id=%s consultation=%s department=%s severity=%s",
            escalation.id,
            escalation.consultation_id,
            department,
            escalation.severity,
        )
        self._emit(escalation)
        # In the background: a clinic that is slow or away must not hold the escalation up.
        self._spawn(self._notify_on_call(escalation), "emergency-on-call")
        return self._escalations[escalation.id]

    async def _notify_once(self, escalation: Escalation) -> bool:
        """Queue a notification to each on-call provider; False when the clinic did not answer."""
        try:
            if escalation.department_id == self._roster.department_id:
                providers = list(await self._roster.fetch())  # kept: it decides resolutions too
            else:
                providers = await self._clinic.on_call(escalation.department_id)
        except Exception as exc:
            log.warning(
                "on-call list unavailable department=%s error=%s",
                escalation.department_id,
                describe_exception(exc),
            )
            return False
        meta = emergency_push_meta(escalation.severity, escalation.id)
        # Not the one escalating: it knows, and its token may not write its own channel.
        recipients = [provider_id for provider_id in providers if provider_id != self.user_id]
        for provider_id in recipients:
            notification = EmergencyNotification(
                title="Emergency escalation",
                body=f"{escalation.severity} escalation in department {escalation.department_id}",
                priority=_PRIORITY[escalation.severity],
                timestamp=_now(),
                escalation_id=escalation.id,
            )
            # One id per recipient (the escalation's id names the escalation, not the publish).
            item_id = str(uuid.uuid5(uuid.UUID(escalation.id), provider_id))
            await self._outbox.put(
                self._outgoing(
                    item_id, channels.notification(provider_id), encode(notification), NOTIFY_KIND, meta
                )
            )
        async with self._lock:
            current = self._escalations.get(escalation.id, escalation)
            self._escalations[escalation.id] = replace(current, notified=len(recipients))
            await self._save_locked()
        log.info("emergency on-call notified id=%s providers=%d", escalation.id, len(recipients))
        self._emit(self._escalations[escalation.id])
        return True

    async def _notify_on_call(self, escalation: Escalation) -> None:
        """Retry the on-call lookup with capped back-off until the clinic answers."""
        low, high = self._retry
        delay = low
        while not await self._notify_once(escalation):
            await asyncio.sleep(delay)  # back-off between attempts, not synchronisation
            delay = min(high, delay * 2)

    # -- resolve ------------------------------------------------------------------------------------

    async def resolve(self, escalation_id: str, resolution: str) -> Escalation:
        """Record a resolution; EmergencyError when no open escalation has that id, or when this
        endpoint's user may not resolve it (neither its escalator nor on call): nothing is sent."""
        resolution = _text(resolution, "resolution")
        await self._check_may_resolve(self._open_escalation(escalation_id))
        async with self._lock:
            escalation = self._open_escalation(escalation_id)  # still open after the lookup
            resolved = replace(
                escalation,
                status="resolved",
                resolved_by=self.user_id,
                resolution=resolution,
                resolved_at=_now(),
                resolution_delivered=False,
            )
            self._escalations[escalation.id] = resolved
            await self._save_locked()
        if self._auditor is not None:
            await self._auditor.emergency_resolved(escalation.id, escalation.department_id)
        await self._outbox.put(self._resolution_item(resolved))
        log.info("emergency resolved id=%s", escalation.id)
        self._emit(resolved)
        return resolved

    def _open_escalation(self, escalation_id: object) -> Escalation:
        escalation = self._escalations.get(escalation_id) if isinstance(escalation_id, str) else None
        if escalation is None or escalation.status != "active":
            raise EmergencyError("id", "names no open escalation")
        return escalation

    async def _check_may_resolve(self, escalation: Escalation) -> None:
        """EmergencyError unless this user escalated it or is on the department's on-call list."""
        on_call = self._roster.known(ON_CALL_FRESH_SECONDS)
        if may_resolve(self.user_id, escalation.escalated_by, on_call) is True:
            return
        try:
            on_call = frozenset(await self._roster.fetch())
        except Exception as exc:
            log.warning(
                "on-call list unavailable department=%s error=%s",
                self.department_id,
                describe_exception(exc),
            )
            raise EmergencyError(
                "resolvedBy", "cannot be checked now: the clinic did not say who is on call (try again)"
            ) from None
        if not may_resolve(self.user_id, escalation.escalated_by, on_call):
            raise EmergencyError(
                "resolvedBy",
                f"{self.user_id} may not resolve it: only its escalator or a provider on call "
                f"in department {escalation.department_id}",
            )

    # -- persistence and outcomes -------------------------------------------------------------------

    async def _save_locked(self) -> None:
        # Kept until finished: ours and active, or resolved here with the resolution undelivered.
        keep = [
            e
            for e in self._escalations.values()
            if (e.own and e.status == "active") or (e.status == "resolved" and not e.resolution_delivered)
        ]
        await asyncio.to_thread(self._store.save, keep)

    def _escalation_item(self, escalation: Escalation) -> Outgoing:
        message = EmergencyEscalation(
            id=escalation.id,
            consultation_id=escalation.consultation_id,
            escalated_by=escalation.escalated_by,
            severity=escalation.severity,
            reason=escalation.reason,
            timestamp=escalation.timestamp,
        )
        channel = channels.emergency(escalation.department_id)
        return self._outgoing(escalation.id, channel, encode(message), ESCALATION_KIND)

    def _resolution_item(self, escalation: Escalation) -> Outgoing:
        assert escalation.resolved_by is not None and escalation.resolution is not None
        message = EmergencyResolved(
            id=escalation.id,
            resolved_by=escalation.resolved_by,
            resolution=escalation.resolution,
            timestamp=escalation.resolved_at or _now(),
        )
        # Its own outbox id: the escalation's publish may still be queued under the escalation's.
        item_id = _resolution_item_id(escalation.id)
        channel = channels.emergency(escalation.department_id)
        return self._outgoing(item_id, channel, encode(message), RESOLUTION_KIND)

    def _outgoing(
        self,
        item_id: str,
        channel: str,
        payload: dict[str, Any],
        kind: str,
        meta: dict[str, Any] | None = None,
    ) -> Outgoing:
        from telehealth_client.durable.outbox import Outgoing

        return Outgoing(
            id=item_id, consultation_id="", channel=channel, message=payload, meta=meta, kind=kind
        )

    def delivered(self, item: Outgoing, timetoken: int) -> None:
        if item.kind == ESCALATION_KIND:
            escalation = self._escalations.get(item.id)
            if escalation is not None and not escalation.delivered:
                self._escalations[item.id] = replace(escalation, delivered=True)
                self._emit(self._escalations[item.id])
                self._saves.spawn(self._save(), "emergency-save")
        elif item.kind == RESOLUTION_KIND:
            for escalation in list(self._escalations.values()):
                if _resolution_item_id(escalation.id) == item.id:
                    self._escalations[escalation.id] = replace(escalation, resolution_delivered=True)
                    self._saves.spawn(self._save(), "emergency-save")
                    self._forget_old_resolved()
                    break

    def undeliverable(self, item: Outgoing, reason: str) -> None:
        log.error("emergency publish failed id=%s kind=%s reason=%s", item.id, item.kind, reason)

    async def _save(self) -> None:
        try:
            async with self._lock:
                await self._save_locked()
        except OSError as exc:
            # Kept in memory; the next change or start writes it again.
            log.error("open escalations not saved error=%s", describe_exception(exc))

    def _forget_old_resolved(self) -> None:
        """Keep the newest ``MAX_RESOLVED_KEPT`` finished escalations; the oldest go."""
        finished = [
            e for e in self._escalations.values() if e.status == "resolved" and e.resolution_delivered
        ]
        for escalation in sorted(finished, key=lambda e: e.timestamp)[
            : max(0, len(finished) - MAX_RESOLVED_KEPT)
        ]:
            del self._escalations[escalation.id]
            self._announced.pop(escalation.id, None)

    def _emit(self, escalation: Escalation) -> None:
        # Only a change is announced: a delivery reported while _notify_once saves announces the
        # state that _notify_once announces once saved.
        if self._announced.get(escalation.id) == escalation:
            return
        self._announced[escalation.id] = escalation
        for listener in list(self.listeners):
            try:
                listener(escalation)
            except Exception as exc:
                log.error("emergency listener failed error=%s", describe_exception(exc))
        self._hub.emit(
            events.EmergencyUpdated(
                escalation.id,
                escalation.consultation_id,
                escalation.severity,
                escalation.status,
                escalation.delivered,
                escalation.notified,
            )
        )

    # -- the department's channel -------------------------------------------------------------------

    async def _on_message(self, envelope: Envelope) -> None:
        async with self._lock:
            await self._receive_locked(envelope, live=True)

    async def _receive_locked(self, envelope: Envelope, *, live: bool) -> None:
        decoded = decode(envelope.channel, envelope.message, envelope.publisher)
        if isinstance(decoded, Drop):
            log.warning(
                "emergency message dropped channel=%s field=%s reason=%s",
                envelope.channel,
                decoded.field,
                decoded.reason,
            )
            if decoded == Drop("resolvedBy", "must equal the publisher"):
                await self._refuse_impostor_locked(envelope)
            return
        if isinstance(decoded, EmergencyEscalation):
            known = self._escalations.get(decoded.id)
            if known is not None:
                if known.own and not known.delivered:
                    self._escalations[decoded.id] = replace(known, delivered=True)
                    self._emit(self._escalations[decoded.id])
                    await self._save_locked()
                return
            escalation = Escalation(
                decoded.id,
                decoded.consultation_id,
                self.department_id,
                decoded.escalated_by,
                decoded.severity,
                decoded.reason,
                decoded.timestamp,
                delivered=True,
                own=decoded.escalated_by == self.user_id,
            )
            self._escalations[decoded.id] = escalation
            self._emit(escalation)
        elif isinstance(decoded, EmergencyResolved):
            await self._take_resolution_locked(decoded, envelope.timetoken)

    async def _take_resolution_locked(
        self, message: EmergencyResolved, timetoken: int, on_call: frozenset[str] | None = None
    ) -> None:
        """Record, refuse, hold or drop a resolution from the channel. ``on_call``: the list just
        fetched, deciding a held one; None decides on the list kept, or holds it."""
        known = self._escalations.get(message.id)
        if known is None:
            log.warning(
                "emergency message dropped channel=%s field=id reason=%s",
                channels.emergency(self.department_id),
                "names no escalation on this channel",
            )
            return
        if known.status == "resolved" and known.resolved_by == message.resolved_by:
            # Our own resolution's echo (it is on the channel: nothing left to send), or a replay.
            if not known.resolution_delivered:
                self._escalations[message.id] = replace(known, resolution_delivered=True)
                await self._save_locked()
                self._forget_old_resolved()
            return
        if on_call is not None:
            verdict = may_resolve(message.resolved_by, known.escalated_by, on_call)
        elif message.id in self._held:
            verdict = None  # behind an earlier resolution of it: the channel's order decides
        else:
            verdict = self._verdict(message.resolved_by, known.escalated_by)
        if verdict is None:
            self._hold_locked(message, timetoken)
        elif not verdict:
            await self._refuse_locked(known, message.resolved_by, timetoken, "not-escalator-or-on-call")
        elif known.status == "resolved":
            # The first resolution is the record: a later one (from anyone) changes nothing.
            log.warning(
                "emergency message dropped channel=%s field=id reason=%s",
                channels.emergency(known.department_id),
                "the escalation is already resolved",
            )
        else:
            resolved = replace(
                known,
                status="resolved",
                resolved_by=message.resolved_by,
                resolution=message.resolution,
                resolved_at=message.timestamp,
                # Resolved by someone else: nothing of ours is left to deliver.
                resolution_delivered=True,
            )
            self._escalations[message.id] = resolved
            self._emit(resolved)
            if known.own:
                await self._save_locked()
            self._forget_old_resolved()

    def _verdict(self, resolver_id: str, escalated_by: str) -> bool | None:
        """May resolve, may not, or None: it takes a newer on-call list than the one kept."""
        verdict = may_resolve(resolver_id, escalated_by, self._roster.known(ON_CALL_FRESH_SECONDS))
        if verdict is False and self._roster.known(REFUSAL_RECHECK_SECONDS) is None:
            return None  # refused only on a list just fetched: a provider may have come on call
        return verdict

    def _hold_locked(self, message: EmergencyResolved, timetoken: int) -> None:
        queue = self._held.get(message.id, [])
        if any(held.message.resolved_by == message.resolved_by for held in queue):
            # Its first resolution of this escalation is the one that counts, or is refused.
            log.info("emergency resolution repeat dropped id=%s resolver=%s", message.id, message.resolved_by)
            return
        if sum(len(waiting) for waiting in self._held.values()) >= MAX_HELD_RESOLUTIONS:
            log.warning(
                "emergency resolution dropped id=%s resolver=%s reason=too many wait for the on-call list",
                message.id,
                message.resolved_by,
            )
            return
        self._held[message.id] = [*queue, _HeldResolution(message, timetoken)]
        log.info(
            "emergency resolution held id=%s resolver=%s desk=%s reason=waiting for the on-call list",
            message.id,
            message.resolved_by,
            self.user_id,
        )
        if not self._deciding:
            self._deciding = True
            self._spawn(self._decide_held(), "emergency-resolutions")

    async def _decide_held(self) -> None:
        """Fetch the on-call list (retried with capped back-off), then decide what is held."""
        low, high = self._retry
        delay = low
        try:
            while self._held:
                try:
                    on_call = frozenset(await self._roster.fetch())
                except Exception as exc:
                    log.warning(
                        "on-call list unavailable department=%s held=%d error=%s",
                        self.department_id,
                        sum(len(waiting) for waiting in self._held.values()),
                        describe_exception(exc),
                    )
                    await asyncio.sleep(delay)  # back-off between attempts, not synchronisation
                    delay = min(high, delay * 2)
                    continue
                delay = low
                async with self._lock:
                    held, self._held = self._held, {}
                    for waiting in held.values():
                        for item in waiting:
                            await self._take_resolution_locked(item.message, item.timetoken, on_call)
        finally:
            self._deciding = False

    async def _refuse_impostor_locked(self, envelope: Envelope) -> None:
        """A resolution whose ``resolvedBy`` is not its publisher, of an escalation on this channel."""
        try:
            claimed = EmergencyResolved.model_validate(envelope.message)
        except ValidationError:
            return
        known = self._escalations.get(claimed.id)
        if known is not None and envelope.publisher is not None:
            await self._refuse_locked(known, envelope.publisher, envelope.timetoken, "not-the-publisher")

    async def _refuse_locked(
        self, escalation: Escalation, resolver_id: str, timetoken: int, refusal: str
    ) -> None:
        """Ignored (the escalation is unchanged) and audited once: not again when read again."""
        key = f"{escalation.id}:{timetoken}"
        first = not self._refusals.seen(key)
        if first:
            if self._auditor is not None:
                await self._auditor.safely(
                    "emergency_resolution_refused",
                    escalation.id,
                    escalation.department_id,
                    resolver_id,
                    refusal,
                )
            try:
                await asyncio.to_thread(self._refusals.record, key)
            except OSError as exc:
                log.error("refused resolutions ledger not saved error=%s", describe_exception(exc))
        log.warning(
            "emergency resolution refused id=%s resolver=%s reason=%s desk=%s audited=%s",
            escalation.id,
            resolver_id,
            refusal,
            self.user_id,
            "now" if first else "before",
        )
