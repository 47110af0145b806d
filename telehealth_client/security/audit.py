"""The audit trail: every audit event is first made durable here, then delivered.

- ``audit_event(...)`` builds an event (PROTOCOL.md, "Audit events") with a new id and the time
  now. IDs only: ``resource_id``, ``channel`` and every metadata value must be an ID-like string
  (``[A-Za-z0-9_.:-]``), an int or a bool, so no free text, and no PHI, can get in.
- ``AuditTrail.record(event)`` appends it to the keyed hash chain in
  ``state_dir/audit/audit.sqlite3`` (``audit_store``; ``ChainKeys`` derived from the agent's cipher
  key) and returns once it is on disk. Calls made while a write is under way are committed
  together by the store's one thread (one transaction, one fsync for all of them).
- Then, in the background, each record is POSTed to the audit sink and published on
  ``audit.{organizationId}`` on the attached bus, in order, each retried with capped full-jitter
  back-off until acknowledged. What is not acknowledged stays pending in the store, so it is
  delivered after a restart. A sink's permanent refusal (4xx other than 401, 408, 429) is kept
  as ``refused`` (``audit status`` shows it), logged by event id and status; never dropped.
- ``verify_chain`` / ``read_status`` / ``read_last``: read-only, for ``telehealth-agent audit``.

Logs name event ids, positions and statuses only, never an event's content.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from pydantic import ValidationError

from telehealth_client.logs import describe_exception
from telehealth_client.protocol import channels, messages
from telehealth_client.protocol.messages import AuditEventType, AuditOutcome, AuditSeverity, SenderRole
from telehealth_client.pubsub.bus import AccessDeniedError, Bus, BusError
from telehealth_client.security.audit_store import (
    AuditDatabase,
    AuditStatus,
    AuditStoreError,
    ChainKeys,
    ChainReport,
    DamagedStoreError,
    DuplicateIdError,
    LastRecord,
    Target,
    read_last_record,
    read_store_status,
    store_path,
    verify_store,
)
from telehealth_client.security.clinic_client import ClinicError
from telehealth_client.sqlite_durability import SqliteDurability

__all__ = [
    "AuditSink",
    "AuditStatus",
    "AuditStoreError",
    "AuditTrail",
    "ChainKeys",
    "ChainReport",
    "DamagedStoreError",
    "LastRecord",
    "audit_event",
    "check_ids_only",
    "read_last",
    "read_status",
    "store_path",
    "verify_chain",
]

log = logging.getLogger(__name__)

_ID_VALUE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_CHANNEL: Final = re.compile(r"[A-Za-z0-9_.-]{1,200}")
_METADATA_KEY: Final = re.compile(r"[a-z][A-Za-z0-9]{0,63}")
_MAX_METADATA_ITEMS: Final = 32
# Answers that say "not now" rather than "never": the sink may take the event later.
_RETRYABLE_CLIENT_STATUSES: Final = frozenset({401, 408, 429})
_DELIVERY_BATCH: Final = 64
# Failures in a row after which a delivery problem is worth a warning (about 2 s at the default
# back-off): a token swap or a blip is over by then.
_PERSISTENT_FAILURES: Final = 5


class AuditSink(Protocol):
    async def post_audit_event(self, event: dict[str, Any]) -> None:
        """Acknowledge ``event`` (the wire form) or raise; a ClinicError with a status says why."""
        ...


# -- building events --------------------------------------------------------------------------------


def _check_value(field: str, value: object) -> None:
    if isinstance(value, bool | int):
        return
    if not isinstance(value, str):
        raise ValueError(f"{field}: must be a string, int or bool, got {type(value).__name__}")
    if not _ID_VALUE.fullmatch(value):
        raise ValueError(
            f"{field}: must be an ID or code, 1-200 of letters, digits, '_', '.', ':' and '-' "
            "(no free text in an audit event)"
        )


def _check_metadata(metadata: Mapping[str, object]) -> None:
    if len(metadata) > _MAX_METADATA_ITEMS:
        raise ValueError(f"metadata: at most {_MAX_METADATA_ITEMS} entries, got {len(metadata)}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not _METADATA_KEY.fullmatch(key):
            raise ValueError("metadata: keys must be camelCase codes of letters and digits, at most 64")
        _check_value(f"metadata.{key}", value)


def check_ids_only(event: messages.AuditEvent) -> None:
    """ValueError naming the field unless every free-form field of ``event`` holds IDs only."""
    _check_value("resource.id", event.resource.id)
    if event.resource.channel is not None and not _CHANNEL.fullmatch(event.resource.channel):
        raise ValueError("resource.channel: must be a channel name, 1-200 of letters, digits, '_', '.', '-'")
    _check_metadata(event.metadata)


def audit_event(
    event_type: AuditEventType,
    *,
    organization_id: str,
    actor_id: str,
    actor_role: SenderRole,
    resource_type: str,
    resource_id: str,
    channel: str | None = None,
    action: str,
    outcome: AuditOutcome = "success",
    severity: AuditSeverity = "info",
    metadata: Mapping[str, str | int | bool] | None = None,
) -> messages.AuditEvent:
    """A new audit event (uuid4 id, now); ValueError naming the field for anything but IDs and codes."""
    try:
        # One nested mapping, so an error's location names the whole path (actor.user_id).
        event = messages.AuditEvent.model_validate(
            {
                "id": str(uuid.uuid4()),
                "timestamp": datetime.now(UTC),
                "event_type": event_type,
                "severity": severity,
                "organization_id": organization_id,
                "actor": {"user_id": actor_id, "role": actor_role},
                "resource": {"type": resource_type, "id": resource_id, "channel": channel},
                "action": action,
                "outcome": outcome,
                "metadata": dict(metadata or {}),
            }
        )
    except ValidationError as exc:
        raise ValueError(_describe_validation(exc)) from None
    check_ids_only(event)
    return event


def _describe_validation(exc: ValidationError) -> str:
    """The first problem's field and reason, never the input (it could be PHI)."""
    error = exc.errors(include_input=False, include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"]) or "event"
    return f"{field}: {error['msg']}"


def canonical(event: messages.AuditEvent) -> str:
    """The wire form as stored and hashed: sorted keys, compact."""
    return json.dumps(messages.encode(event), sort_keys=True, separators=(",", ":"))


def retry_delay(
    failures: int, low: float, high: float, draw: Callable[[float, float], float] = random.uniform
) -> float:
    """Full jitter: anywhere up to ``low * 2**(failures-1)``, capped at ``high``."""
    return draw(0.0, min(high, low * (2 ** min(max(failures, 1) - 1, 16))))


# -- the trail ------------------------------------------------------------------------------------


class AuditTrail:
    """The durable trail of one organization, in ``state_dir/audit/`` (created 0700).

    ``keys``: the chain's HMAC keys (``ChainKeys(cipher_key, previous_cipher_keys)``).
    ``sink`` None: records wait for a sink (a later run with one delivers them).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        keys: ChainKeys,
        organization_id: str,
        sink: AuditSink | None,
        backoff_min_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
    ) -> None:
        if not 0 < backoff_min_seconds <= backoff_max_seconds:
            raise ValueError("backoff_min_seconds: must be above 0 and at most backoff_max_seconds")
        self.organization_id = channels.validate_id(organization_id, "organizationId")
        self._channel = channels.audit(organization_id)
        self._sink = sink
        self._backoff = (backoff_min_seconds, backoff_max_seconds)
        self._keys = keys
        self._db = AuditDatabase(store_path(state_dir), keys, on_change=self._store_changed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._wake: dict[Target, asyncio.Event] = {"sink": asyncio.Event(), "channel": asyncio.Event()}
        self._waiting: list[tuple[str, str, asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._sink_task: asyncio.Task[None] | None = None
        self._bus: Bus | None = None
        self._channel_task: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()  # a replaced bus's loop, until it has ended
        self._state = "new"  # new, open, closed

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the store and start delivering what is pending.

        DamagedStoreError (its ``path``, ``problem`` and ``advice``) if the file there is not an
        audit store this agent can append to; AuditStoreError if it cannot be opened at all.
        """
        if self._state != "new":
            raise RuntimeError(f"the audit trail is {self._state}")
        self._loop = asyncio.get_running_loop()
        status = await self._db.open()
        self._state = "open"
        log.info(
            "audit trail open records=%d awaiting_sink=%d awaiting_channel=%d refused=%d",
            status.records,
            status.awaiting_sink,
            status.awaiting_channel,
            status.refused_sink + status.refused_channel,
        )
        if self._sink is not None:
            self._sink_task = asyncio.create_task(
                self._deliver("sink", self._post_to_sink), name="audit-sink-delivery"
            )
        if self._bus is not None:
            self._start_channel(self._bus)

    async def aclose(self) -> None:
        """Finish the records being written, stop delivering, close the store. Idempotent."""
        if self._state == "closed":
            return
        opened, self._state = self._state == "open", "closed"
        writer = self._writer
        if writer is not None:
            await asyncio.wait({writer})  # records already accepted are written, not abandoned
        tasks = {task for task in (self._sink_task, self._channel_task) if task is not None} | self._retired
        self._sink_task = self._channel_task = None
        self._bus = None
        for task in tasks:
            task.cancel()
        if tasks:
            # wait(), not gather: a cancellation of aclose() itself must still propagate.
            await asyncio.wait(tasks)
        if opened:
            await self._db.close()

    # -- recording -----------------------------------------------------------------------------

    async def record(self, event: messages.AuditEvent) -> int:
        """Append ``event`` to the chain; its position (1-based) once it is on disk.

        ValueError naming the field, and nothing stored, for an event of another organization,
        one that is not IDs only, or an id already recorded. AuditStoreError if the disk refused.
        """
        if self._state != "open":
            raise RuntimeError(f"the audit trail is {self._state if self._state != 'new' else 'not open'}")
        if event.organization_id != self.organization_id:
            raise ValueError("organizationId: must be this trail's organization")
        check_ids_only(event)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((event.id, canonical(event), future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_waiting(), name="audit-writer")
        return await future

    async def _write_waiting(self) -> None:
        """Group commit: whatever waits when a write starts goes into that one transaction."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await self._db.append([(event_id, text) for event_id, text, _ in batch])
                except Exception as exc:
                    where = describe_exception(exc)
                    log.error("audit append failed records=%d error=%s", len(batch), where)
                    for _, _, future in batch:
                        if not future.done():
                            future.set_exception(
                                AuditStoreError(f"the audit store was not written ({where})")
                            )
                    continue
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():
                        continue  # its caller was cancelled; the record stands
                    if isinstance(result, DuplicateIdError):
                        future.set_exception(DuplicateIdError(result.position))
                    else:
                        future.set_result(result.position)
                for wake in self._wake.values():
                    wake.set()
        finally:
            self._writer = None

    # -- the bus -------------------------------------------------------------------------------

    def attach_bus(self, bus: Bus) -> None:
        """Publish pending and new events on ``audit.{organizationId}`` on ``bus`` (replacing any other)."""
        if self._state == "closed":
            raise RuntimeError("the audit trail is closed")
        old, self._bus, self._channel_task = self._channel_task, bus, None
        if old is not None:
            old.cancel()
            self._retired.add(old)
            old.add_done_callback(self._retired.discard)
        if self._state == "open":
            self._start_channel(bus, after=old)

    async def detach_bus(self, within: float = 2.0) -> None:
        """Publish what is pending on the attached bus for up to ``within`` s, then stop using it.

        What is left is published on the next bus attached. Idempotent.
        """
        if self._bus is None:
            return
        task = self._channel_task
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until(lambda: self._db.status.awaiting_channel == 0), within)
            if self._channel_task is not task:
                return  # another bus was attached meanwhile: it is the one in use now
        self._channel_task, self._bus = None, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
            log.info("audit channel detached awaiting_channel=%d", self._db.status.awaiting_channel)

    def _start_channel(self, bus: Bus, after: asyncio.Task[None] | None = None) -> None:
        async def publish(event: dict[str, Any]) -> None:
            await bus.publish(self._channel, event)

        async def run() -> None:
            if after is not None:
                await asyncio.wait({after})  # the previous bus's loop ends first: one publisher at a time
            await self._deliver("channel", publish)

        self._channel_task = asyncio.create_task(run(), name="audit-channel-delivery")

    # -- delivery ------------------------------------------------------------------------------

    async def _post_to_sink(self, event: dict[str, Any]) -> None:
        assert self._sink is not None
        await self._sink.post_audit_event(event)

    async def _deliver(self, target: Target, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        """Send each pending record to ``target`` in order, each until acknowledged or refused."""
        wake, after, failures = self._wake[target], 0, 0
        while True:
            wake.clear()
            try:
                pending = await self._db.pending(target, after, _DELIVERY_BATCH)
            except Exception as exc:
                failures += 1
                log.error("audit store read failed target=%s error=%s", target, describe_exception(exc))
                await asyncio.sleep(retry_delay(failures, *self._backoff))
                continue
            failures = 0
            if not pending:
                await wake.wait()
                continue
            for position, text in pending:
                try:
                    event = json.loads(text)
                except ValueError:
                    # Altered on disk (``audit verify`` names it); sending it would fail forever.
                    log.error("audit record unreadable target=%s position=%d", target, position)
                    await self._settle(target, position, 0)
                else:
                    await self._deliver_one(target, position, event, send)
                after = position

    async def _deliver_one(
        self,
        target: Target,
        position: int,
        event: dict[str, Any],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        failures = 0
        while True:
            try:
                await send(event)
            except Exception as exc:
                refusal = _permanent_refusal(exc)
                if refusal is not None:
                    log.error(
                        "audit event refused target=%s id=%s position=%d status=%d",
                        target,
                        event.get("id"),
                        position,
                        refusal,
                    )
                    await self._settle(target, position, refusal)
                    return
                failures += 1
                if failures in (1, _PERSISTENT_FAILURES) or failures % 20 == 0:
                    # A first failure is routine (a token being replaced, a network blip): info.
                    # Still failing after a few tries is for the person on call: a warning.
                    log.log(
                        logging.INFO if failures < _PERSISTENT_FAILURES else logging.WARNING,
                        "audit delivery failed target=%s id=%s position=%d failures=%d error=%s",
                        target,
                        event.get("id"),
                        position,
                        failures,
                        describe_exception(exc),
                    )
                await asyncio.sleep(retry_delay(failures, *self._backoff))
                continue
            await self._settle(target, position, None)
            if failures:
                log.info(
                    "audit event delivered target=%s position=%d after_failures=%d",
                    target,
                    position,
                    failures,
                )
            return

    async def _settle(self, target: Target, position: int, refused_status: int | None) -> None:
        failures = 0
        while True:
            try:
                if refused_status is None:
                    await self._db.acknowledge(target, position)
                else:
                    await self._db.refuse(target, position, refused_status)
                return
            except Exception as exc:
                # Not written: it would be delivered again after a restart (the sink keeps one copy).
                failures += 1
                log.error("audit store update failed target=%s error=%s", target, describe_exception(exc))
                await asyncio.sleep(retry_delay(failures, *self._backoff))

    # -- status --------------------------------------------------------------------------------

    def status(self) -> AuditStatus:
        return self._db.status

    async def durability(self) -> SqliteDurability:
        """How the store's writes reach the disk (FULL: a recorded event survives a power cut)."""
        return await self._db.durability()

    async def verify(self) -> ChainReport:
        """The chain on disk checked under this trail's keys (read-only, in a thread)."""
        return await asyncio.to_thread(verify_store, self._db.path, self._keys)

    async def wait_delivered(self, within: float) -> bool:
        """True once everything recorded is acknowledged by the sink and (with a bus) the channel."""

        def delivered() -> bool:
            status = self._db.status
            channel_done = self._bus is None or status.awaiting_channel == 0
            return not self._waiting and self._writer is None and status.awaiting_sink == 0 and channel_done

        try:
            await asyncio.wait_for(self._until(delivered), within)
        except TimeoutError:
            return False
        return True

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self._changed.clear()
            await self._changed.wait()

    def _store_changed(self) -> None:
        """Called on the store's thread after each change."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._changed.set)


def _permanent_refusal(exc: Exception) -> int | None:
    """The status of a refusal that trying again cannot cure, else None."""
    if isinstance(exc, ClinicError) and exc.status is not None:
        if 400 <= exc.status < 500 and exc.status not in _RETRYABLE_CLIENT_STATUSES:
            return exc.status
        return None
    if isinstance(exc, BusError) and not isinstance(exc, AccessDeniedError) and not exc.retryable:
        # Too large or not JSON: the same message would fail the same way. A 403 is retried:
        # audit.{org} is writable for every role, so a refusal means the token is being renewed.
        return exc.status_code or 0
    return None


# -- read-only, for the command line --------------------------------------------------------------


def verify_chain(state_dir: Path, keys: ChainKeys) -> ChainReport:
    """Check the keyed hash chain; AuditStoreError only if there is no store file at all."""
    return verify_store(store_path(state_dir), keys)


def read_status(state_dir: Path) -> AuditStatus:
    """AuditStoreError if there is no store; DamagedStoreError if the file is not a readable one."""
    return read_store_status(store_path(state_dir))


def read_last(state_dir: Path) -> LastRecord | None:
    """The last record's position and time, to compare with the sink (a rolled-back file is shorter)."""
    return read_last_record(store_path(state_dir))
