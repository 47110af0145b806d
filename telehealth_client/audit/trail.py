"""The audit trail: every audit event is first made durable here, then delivered.

- ``audit_event(...)`` builds an event (PROTOCOL.md, "Audit events") with a new id and the time
  now. IDs only: ``resource_id``, ``channel`` and every metadata value must be an ID-like string
  (``[A-Za-z0-9_.:-]``), an int or a bool, so no free text, and no PHI, can get in.
- ``AuditTrail.record(event)`` appends it to the device's keyed hash chain in
  ``state_dir/audit/audit.sqlite3`` (``audit_store``; ``ChainKeys`` derived from the device
  credential), stamped with this device's ``deviceId`` and its next ``sequence``, and returns once
  it is on disk. Calls made while a write is under way are committed together by the store's one
  thread (one transaction, one fsync for all of them).
- Then, in the background, each record is POSTed to the audit sink and published on
  ``audit.{organizationId}`` on the attached bus, in order, each retried with capped full-jitter
  back-off until acknowledged. What is not acknowledged stays pending in the store, so it is
  delivered after a restart. The whole chain is verified at start (a record that does not verify
  stops it), and each record again right before it is sent: one changed since is not sent, and
  delivery to that target stops there with an error naming its position. A sink's permanent
  refusal (4xx other than 401, 408, 429) is kept as ``refused`` (``audit status`` shows it),
  logged by event id and status; never dropped.
- ``flush(target, within)`` (a stop's last deliveries): waits for ``target`` to hold everything
  recorded, cutting its back-off short, and gives up as soon as an attempt fails, rather than
  waiting out ``within``; ``detach_bus`` flushes the channel so.
- The sink's answer (the highest sequence it holds for this device with no gap below it) is kept,
  MACed, in the store and in ``audit_acks``' file beside it, so a store put back to an older copy
  is detected (``audit verify``). A new store (the first, or after a damaged one was moved aside)
  continues from the sink's head, so no sequence is used twice. One begun while the head could not
  be read (the clinic down or refusing this device at a first start) is marked so under the head's
  MAC (``audit_anchoring``) and delivers nothing until the head is read (``reach_sink``, by the
  caller that said ``drive_sink_head``, else by the trail itself): it is then placed after it, what
  it recorded meanwhile re-chained with the sequences that follow. A store not so marked that is
  behind the sink is a rollback, refused.
- A version 2 store left by an earlier agent is set aside and delivered first (``audit_legacy``),
  only on a device that never ran the device-keyed trail; afterwards a version 2 store is a
  rollback or a plant, refused at start (``audit_layout``). A store gone while the acknowledgement
  file or the sink shows acknowledged sequences is followed by one that records it (an error log,
  and a note in every ``audit verify``).
- ``prune(before)``: records the sink acknowledged and recorded before ``before`` leave the file
  (``audit_pruning``: the chain then starts from an anchor under the head's MAC, so ``audit
  verify`` still detects what it did), in batches on the store's thread, then the file gives the
  space back. A record the sink has not acknowledged is never pruned; ``PruneReport.backlog``
  says how much waits.
- ``verify_chain`` / ``read_status`` / ``read_last``: read-only, for ``telehealth-agent audit``.

Logs name event ids, positions, sequences and statuses only, never an event's content.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

from pydantic import ValidationError

from telehealth_client.audit.acks import (
    AcknowledgementFileError,
    acknowledgement_path,
    read_acknowledged_if_present,
    write_acknowledged,
)
from telehealth_client.audit.keys import ChainKeys, LegacyChainKeys
from telehealth_client.audit.layout import (
    follows_removed_note,
    plan_start,
    set_aside_missing_note,
    set_aside_present,
)
from telehealth_client.audit.legacy import (
    LegacyDatabase,
    legacy_store_path,
    set_aside_legacy_store,
)
from telehealth_client.audit.origin import SetAside, StoreOrigin
from telehealth_client.audit.pruning import PRUNE_BATCH, Backlog
from telehealth_client.audit.store import (
    AuditDatabase,
    AuditStatus,
    AuditStoreError,
    DamagedStoreError,
    DuplicateIdError,
    LastRecord,
    Target,
    store_kind,
    store_path,
)
from telehealth_client.audit.verify import (
    ChainReport,
    read_last_record,
    read_store_status,
    verify_legacy_store,
    verify_store,
)
from telehealth_client.backoff import back_off_delay
from telehealth_client.durable.sqlite import SqliteDurability, files_bytes
from telehealth_client.logs import describe_exception
from telehealth_client.protocol import channels, messages
from telehealth_client.protocol.messages import AuditEventType, AuditOutcome, AuditSeverity, SenderRole
from telehealth_client.pubsub.bus import AccessDeniedError, Bus, BusError
from telehealth_client.security.clinic_client import ClinicError

__all__ = [
    "AuditSink",
    "AuditStatus",
    "AuditStoreError",
    "AuditTrail",
    "Backlog",
    "ChainKeys",
    "ChainReport",
    "DamagedStoreError",
    "LastRecord",
    "LegacyChainKeys",
    "PruneReport",
    "SinkHead",
    "acknowledgement_path",
    "audit_event",
    "check_ids_only",
    "legacy_store_path",
    "read_last",
    "read_status",
    "store_path",
    "verify_chain",
    "verify_legacy_chain",
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
# How long opening the trail waits for the sink's head: a clinic out of reach must not hold up
# the start (the trail then continues from what the state directory keeps).
SINK_HEAD_TIMEOUT_SECONDS: Final = 5.0
# A store begun without the sink's head asks again this far apart while the clinic refuses this
# device's credential (as the agent's start does: ``consultation.start_policy``).
REFUSED_RETRY_SECONDS: Final = 60.0


@dataclass(frozen=True)
class PruneReport:
    """One ``AuditTrail.prune``: ``records`` removed (``unpublished`` of them never reached the
    audit channel; the sink holds all of them), ``held_at``/``held``: a record that keeps every
    later one from being pruned until someone acts (refused by the sink, or not verifying),
    ``backlog``: what the sink has not acknowledged, ``file_bytes``: the store on disk after it."""

    records: int
    unpublished: int
    held_at: int | None
    held: str | None
    backlog: Backlog
    file_bytes: int


class SinkHead(Protocol):
    """What the sink holds for a device: the highest sequence with no gap below it."""

    @property
    def device_id(self) -> str: ...

    @property
    def highest_sequence(self) -> int: ...


class AuditSink(Protocol):
    async def post_audit_event(self, event: dict[str, Any]) -> SinkHead | None:
        """Acknowledge ``event`` (the wire form) or raise; a ClinicError with a status says why.

        The sink's head for the posting device, when it answers one."""
        ...

    async def audit_head(self, device_id: str) -> SinkHead:
        """What the sink holds for ``device_id``, or raise."""
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


def retry_delay(
    failures: int, low: float, high: float, draw: Callable[[float, float], float] = random.uniform
) -> float:
    """Full jitter: anywhere up to the back-off's ceiling (``backoff.ceiling``)."""
    return back_off_delay(failures, low, high, draw, floor=0.0)


# -- the trail ------------------------------------------------------------------------------------


Store = AuditDatabase | LegacyDatabase


class AuditTrail:
    """The durable trail of one device, in ``state_dir/audit/`` (created 0700).

    ``keys``: the chain's keys (``ChainKeys(device_credential, previous_device_credentials)``);
    ``device_id``: the agent's own ID (its ``user_id``), stamped on every event and bound into
    the head. ``legacy_keys``: the cipher keys a version 2 store left by an earlier agent was
    keyed with (``LegacyChainKeys(cipher_key, previous_cipher_keys)``); needed only if there is one.
    ``sink`` None: records wait for a sink (a later run with one delivers them).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        keys: ChainKeys,
        device_id: str,
        organization_id: str,
        sink: AuditSink | None,
        legacy_keys: LegacyChainKeys | None = None,
        backoff_min_seconds: float = 0.5,
        backoff_max_seconds: float = 30.0,
    ) -> None:
        if not 0 < backoff_min_seconds <= backoff_max_seconds:
            raise ValueError("backoff_min_seconds: must be above 0 and at most backoff_max_seconds")
        self.organization_id = channels.validate_id(organization_id, "organizationId")
        self.device_id = channels.validate_id(device_id, "deviceId")
        self._state_dir = Path(state_dir)
        self._channel = channels.audit(organization_id)
        self._sink = sink
        self._backoff = (backoff_min_seconds, backoff_max_seconds)
        self._keys = keys
        self._legacy_keys = legacy_keys
        self._db = AuditDatabase(store_path(state_dir), keys, self.device_id, on_change=self._store_changed)
        self._legacy: LegacyDatabase | None = None
        self._acknowledgements = acknowledgement_path(state_dir)
        self._acknowledged_saved = 0
        self._acknowledged_writer: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        self._wake: dict[Target, asyncio.Event] = {"sink": asyncio.Event(), "channel": asyncio.Event()}
        # Set (and replaced) by flush(): a delivery backing off tries again at once.
        self._retry_now: dict[Target, asyncio.Event] = {"sink": asyncio.Event(), "channel": asyncio.Event()}
        # Whether the target's last delivery attempt failed (flush() gives up on it).
        self._failing: dict[Target, bool] = {"sink": False, "channel": False}
        self._waiting: list[tuple[str, dict[str, Any], asyncio.Future[int]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._sink_task: asyncio.Task[None] | None = None
        self._bus: Bus | None = None
        self._channel_task: asyncio.Task[None] | None = None
        self._retired: set[asyncio.Task[None]] = set()  # a replaced bus's loop, until it has ended
        self._state = "new"  # new, open, closed
        # Why the sink's head could not be read at open (None: read, or no sink): ``reach_sink``.
        self._head_error: ClinicError | None = None
        self._reaching = asyncio.Lock()
        # Set by ``drive_sink_head``: the caller asks again (and says so); the trail waits for it.
        self._head_driven = False
        self._anchored = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (or create) the store and start delivering what is pending.

        DamagedStoreError (its ``path``, ``problem`` and ``advice``) if the file there is not an
        audit store this device can append to, or the sink's acknowledgements kept beside it say
        it was rolled back; AuditStoreError if it cannot be opened at all.
        """
        if self._state != "new":
            raise RuntimeError(f"the audit trail is {self._state}")
        self._loop = asyncio.get_running_loop()
        try:
            file_kept = await asyncio.to_thread(
                read_acknowledged_if_present, self._acknowledgements, self._keys, self.device_id
            )
        except AcknowledgementFileError as exc:
            raise DamagedStoreError(
                exc.path,
                exc.problem,
                "if the device credential was rotated, list the old one in previous_device_credentials; "
                "otherwise `telehealth-agent audit verify --against-sink` tells whether the trail is whole, "
                "then move the file aside (the agent writes it again)",
            ) from None
        kept_in_file = file_kept or 0
        held = await self._ask_sink_head()
        try:
            status = await self._open_stores(file_kept, held)
            if held is not None:
                status = await self._place_after(held, status)
                self._check_against_sink(held, status)
                await self._db.keep_acknowledged(held)
        except BaseException:
            await self._close_stores()
            raise
        status = self._db.status
        if file_kept is None:
            # Written as soon as the device-keyed store exists (not only at the first
            # acknowledgement): its presence proves this device ran it, so a version 2 store put
            # in its place later is a rollback even if nothing ever reached the sink.
            try:
                await asyncio.to_thread(
                    write_acknowledged,
                    self._acknowledgements,
                    self._keys,
                    self.device_id,
                    status.acknowledged,
                )
                kept_in_file = status.acknowledged
            except OSError as exc:
                log.error(
                    "audit acknowledgement file not written file=%s error=%s",
                    self._acknowledgements,
                    describe_exception(exc),
                )
        self._acknowledged_saved = kept_in_file
        self._state = "open"
        if status.acknowledged > kept_in_file:
            self._save_acknowledged()  # the file fell behind (a crash between the two writes)
        legacy = self._legacy.status if self._legacy is not None else None
        log.info(
            "audit trail open device=%s records=%d next_sequence=%d acknowledged=%d awaiting_sink=%d "
            "awaiting_channel=%d refused=%d legacy_awaiting_sink=%d legacy_awaiting_channel=%d",
            self.device_id,
            status.records,
            status.base + status.records + 1,
            status.acknowledged,
            status.awaiting_sink,
            status.awaiting_channel,
            status.refused_sink + status.refused_channel,
            0 if legacy is None else legacy.awaiting_sink,
            0 if legacy is None else legacy.awaiting_channel,
        )
        if self._db.unanchored:
            # Its sequences may still change (``reach_sink``): nothing leaves before that.
            log.info("audit trail waits for the sink's head before delivering anything")
            self._sink_task = asyncio.create_task(self._anchor_then_deliver(), name="audit-sink-delivery")
        else:
            self._anchored.set()
            self._start_deliveries()

    def _start_deliveries(self) -> None:
        if self._sink is not None and self._sink_task is None:
            self._sink_task = asyncio.create_task(
                self._deliver("sink", self._post_to_sink), name="audit-sink-delivery"
            )
        if self._bus is not None and self._channel_task is None:
            self._start_channel(self._bus)

    def drive_sink_head(self) -> None:
        """The caller asks for the sink's head again itself (``reach_sink``, with its own pace and
        words): the trail's own retries, for a store begun without it, stop."""
        self._head_driven = True

    async def _anchor_then_deliver(self) -> None:
        """A store begun without the sink's head: ask for it until it answers (unless the caller
        does: ``drive_sink_head``), placing the store after it, then deliver."""
        failures = 0
        while self._db.unanchored and not self._head_driven:
            failures += 1
            error = self._head_error
            refused = error is not None and error.status in (401, 403)
            # A refused credential is not fixed in seconds: asked again at the slow pace.
            await asyncio.sleep(REFUSED_RETRY_SECONDS if refused else retry_delay(failures, *self._backoff))
            if self._head_driven:
                break
            try:
                await self.reach_sink()
            except ClinicError as exc:
                if failures % _PERSISTENT_FAILURES == 0:
                    why = f"HTTP {exc.status}" if exc.status is not None else exc.reason
                    log.warning(
                        "audit sink head still not read: nothing delivered yet failures=%d (%s)",
                        failures,
                        why,
                    )
                continue
            except Exception as exc:  # behind the sink, or our bug: nothing is sent under doubt
                log.error("audit sink head not usable: delivery waits error=%s", describe_exception(exc))
                return
        await self._anchored.wait()
        await self._deliver("sink", self._post_to_sink)

    @property
    def head_error(self) -> ClinicError | None:
        """Why the sink's head could not be read when the trail opened (the clinic unreachable or
        refusing this device's credential); None once it was read (``reach_sink``), or without a sink."""
        return self._head_error

    async def reach_sink(self) -> None:
        """Read the sink's head now (one request) after it could not be read at open: a store begun
        without it is placed after it (``AuditDatabase.anchor``) and starts delivering; any store is
        checked against it. ClinicError if the clinic does not answer it (the caller retries);
        DamagedStoreError if the trail is behind the sink (a rollback, refused as at open)."""
        if self._state != "open":
            raise RuntimeError(f"the audit trail is {self._state if self._state != 'new' else 'not open'}")
        if self._sink is None or self._head_error is None:
            return
        async with self._reaching:
            if self._head_error is None:
                return
            try:
                held = await self._read_sink_head()
            except ClinicError as exc:
                self._head_error = exc  # the latest word: a refusal is asked again slowly
                raise
            status = await self._place_after(held, self._db.status)
            self._check_against_sink(held, status)
            await self._db.keep_acknowledged(held)
            if self._db.status.acknowledged > self._acknowledged_saved:
                self._save_acknowledged()  # raised here or by the anchoring: the file follows
            self._head_error = None
            log.info("audit sink head read: the trail is checked against it sequence=%d", held)
            self._anchored.set()
            self._start_deliveries()

    async def _place_after(self, held: int, status: AuditStatus) -> AuditStatus:
        """An unanchored store placed after the sink's head ``held``; its status (as is otherwise)."""
        if not self._db.unanchored:
            return status
        old_base = status.base
        moved = await self._db.anchor(held)
        status = self._db.status
        if moved:
            log.warning(
                "audit trail begun without the sink's head placed after it: records=%d re-chained as "
                "sequences %d-%d (were %d-%d; the sink already held sequence %d of this device)",
                moved,
                status.base + 1,
                status.base + moved,
                old_base + 1,
                old_base + moved,
                held,
            )
        elif status.base != old_base:
            log.info("audit trail begun without the sink's head begun at sequence %d", status.base + 1)
        return status

    async def _ask_sink_head(self) -> int | None:
        """The highest sequence the sink holds for this device; None without a sink or an answer
        (``head_error`` then says why, ``reach_sink`` tries again)."""
        if self._sink is None:
            return None
        try:
            return await self._read_sink_head()
        except ClinicError as exc:
            self._head_error = exc
            # The agent says it plainly (its status line) while it asks again.
            log.info(
                "audit sink head not read: the trail goes on from the state directory (%s)",
                f"HTTP {exc.status}" if exc.status is not None else exc.reason,
            )
            return None

    async def _read_sink_head(self) -> int:
        """One request for the sink's head: its highest sequence of this device; every failure
        (an answer for another device too) as a ClinicError."""
        assert self._sink is not None
        try:
            head = await asyncio.wait_for(self._sink.audit_head(self.device_id), SINK_HEAD_TIMEOUT_SECONDS)
        except ClinicError:
            raise
        except TimeoutError:
            raise ClinicError("audit-head", "timed out") from None
        except Exception as exc:
            raise ClinicError("audit-head", f"failed ({describe_exception(exc)})") from None
        if head.device_id != self.device_id:
            log.warning("audit sink head answered for another device device=%s", head.device_id)
            raise ClinicError("audit-head", "malformed answer: deviceId: is not this device's")
        return head.highest_sequence

    def _check_against_sink(self, held: int, status: AuditStatus) -> None:
        end = status.base + status.records
        if held > end:
            # Appending would re-use sequences the sink holds (it refuses them, 409): say why now.
            raise DamagedStoreError(
                self._db.path,
                f"the sink already holds sequence {held} of this device but the trail ends at {end}: "
                "the state directory was put back to an older copy, or records were removed",
            )

    async def _open_stores(self, file_kept: int | None, held: int | None) -> AuditStatus:
        """The device-keyed store, opened or begun, and the version 2 store it set aside (if any);
        ``file_kept``: what the acknowledgement file keeps (None: no file)."""
        kept_in_file = file_kept or 0
        current, aside = self._db.path, legacy_store_path(self._state_dir)
        kind = await asyncio.to_thread(store_kind, current)
        plan = await asyncio.to_thread(
            plan_start,
            current,
            kind,
            aside,
            file_kept,
            self._acknowledgements.name,
            held,
            self.device_id,
        )
        set_aside: SetAside | None = None
        if plan.adopt_set_aside:
            keys = self._legacy_keys_for(current if plan.set_aside else aside)
            if plan.set_aside:
                await asyncio.to_thread(set_aside_legacy_store, self._state_dir)
            set_aside = await self._open_legacy(aside, keys, None)
        # A new store (the first, or one begun after a damaged one was moved aside) continues
        # after the last sequence anyone acknowledged: none is used twice.
        base = max(kept_in_file, held or 0)
        status = await self._db.open(
            base_if_new=base,
            acknowledged_elsewhere=kept_in_file,
            file_name=self._acknowledgements.name,
            origin_if_new=StoreOrigin(follows_removed=plan.follows_removed, set_aside=set_aside),
            # Begun without the sink's head: placed after it once it is read (``reach_sink``).
            unanchored_if_new=self._sink is not None and held is None,
        )
        if plan.follows_removed:
            log.error("audit store %s was not there: %s", current, follows_removed_note(base))
        if kind == "store":
            recorded = self._db.origin.set_aside
            present = await asyncio.to_thread(set_aside_present, aside, recorded)
            if recorded is not None and present:
                await self._open_legacy(aside, self._legacy_keys_for(aside), recorded)
            elif recorded is not None:
                log.error("audit store %s: %s", current, set_aside_missing_note(recorded))
        return status

    def _legacy_keys_for(self, path: Path) -> LegacyChainKeys:
        if self._legacy_keys is None:
            raise DamagedStoreError(
                path,
                "a version 2 store (keyed by the cipher key) is there and no cipher key was given",
                "give the agent its cipher_key so that what waits in it is delivered",
            )
        return self._legacy_keys

    async def _open_legacy(self, path: Path, keys: LegacyChainKeys, expected: SetAside | None) -> SetAside:
        """Open a set-aside version 2 store for delivery (it is never appended to); ``expected``:
        what the device-keyed store recorded setting aside."""
        legacy = LegacyDatabase(path, keys, on_change=self._store_changed)
        await legacy.open(expected)
        self._legacy = legacy
        return legacy.set_aside

    async def _close_stores(self) -> None:
        await self._db.close()
        if self._legacy is not None:
            await self._legacy.close()

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
        if opened and self._db.status.acknowledged > self._acknowledged_saved:
            # A delivery cancelled between the store's acknowledgement and its file update.
            self._save_acknowledged()
        if self._acknowledged_writer is not None:
            await asyncio.wait({self._acknowledged_writer})  # the file is not left behind the store
        if opened:
            await self._close_stores()

    # -- recording -----------------------------------------------------------------------------

    async def record(self, event: messages.AuditEvent) -> int:
        """Append ``event`` to the chain; its position (1-based) once it is on disk.

        The trail sets ``deviceId`` (this device) and ``sequence`` (the next one). ValueError
        naming the field, and nothing stored, for an event of another organization or device, one
        that already has a sequence, one that is not IDs only, or an id already recorded.
        AuditStoreError if the disk refused.
        """
        if self._state != "open":
            raise RuntimeError(f"the audit trail is {self._state if self._state != 'new' else 'not open'}")
        if event.organization_id != self.organization_id:
            raise ValueError("organizationId: must be this trail's organization")
        if event.device_id is not None and event.device_id != self.device_id:
            raise ValueError("deviceId: must be this trail's device")
        if event.sequence is not None:
            raise ValueError("sequence: is given by the trail when it records the event")
        check_ids_only(event)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((event.id, messages.encode(event), future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_waiting(), name="audit-writer")
        return await future

    async def _write_waiting(self) -> None:
        """Group commit: whatever waits when a write starts goes into that one transaction."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    results = await self._db.append([(event_id, wire) for event_id, wire, _ in batch])
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
        if self._state == "open" and not self._db.unanchored:
            self._start_channel(bus, after=old)

    async def detach_bus(self, within: float = 2.0) -> None:
        """Publish what is pending on the attached bus for up to ``within`` s (less once every
        attempt fails: ``flush``), then stop using it.

        What is left is published on the next bus attached. Idempotent.
        """
        if self._bus is None:
            return
        task = self._channel_task
        if task is not None:
            await self.flush("channel", within)
            if self._channel_task is not task:
                return  # another bus was attached meanwhile: it is the one in use now
        self._channel_task, self._bus = None, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
            log.info("audit channel detached awaiting_channel=%d", self._awaiting("channel"))

    def _start_channel(self, bus: Bus, after: asyncio.Task[None] | None = None) -> None:
        async def publish(event: dict[str, Any]) -> None:
            await bus.publish(self._channel, event)

        async def run() -> None:
            if after is not None:
                await asyncio.wait({after})  # the previous bus's loop ends first: one publisher at a time
            await self._deliver("channel", publish)

        self._channel_task = asyncio.create_task(run(), name="audit-channel-delivery")

    # -- delivery ------------------------------------------------------------------------------

    async def _post_to_sink(self, event: dict[str, Any]) -> SinkHead | None:
        assert self._sink is not None
        return await self._sink.post_audit_event(event)

    async def _deliver(
        self, target: Target, send: Callable[[dict[str, Any]], Awaitable[SinkHead | None]]
    ) -> None:
        """Send each pending record to ``target`` in order, each until acknowledged or refused:
        a set-aside version 2 store's first (it gets nothing new), then this device's."""
        if self._legacy is not None and not await self._drain(self._legacy, target, send, forever=False):
            return
        await self._drain(self._db, target, send, forever=True)

    async def _drain(
        self,
        store: Store,
        target: Target,
        send: Callable[[dict[str, Any]], Awaitable[SinkHead | None]],
        *,
        forever: bool,
    ) -> bool:
        """False once a record that does not verify stopped delivery to ``target``."""
        wake, after, failures = self._wake[target], 0, 0
        while True:
            wake.clear()
            try:
                pending = await store.pending(target, after, _DELIVERY_BATCH)
            except Exception as exc:
                failures += 1
                log.error("audit store read failed target=%s error=%s", target, describe_exception(exc))
                await asyncio.sleep(retry_delay(failures, *self._backoff))
                continue
            failures = 0
            if not pending:
                if not forever:
                    return True
                await wake.wait()
                continue
            for record in pending:
                if not record.verified:
                    # Changed on disk since the chain verified at start: never sent, and nothing
                    # after it either (it would go out in another order, or hide the gap).
                    log.error(
                        "audit record does not verify: delivery stopped target=%s file=%s position=%d "
                        "(`telehealth-agent audit verify` names the problem)",
                        target,
                        store.path,
                        record.position,
                    )
                    return False
                try:
                    event = json.loads(record.event)
                except ValueError:
                    # Altered on disk (``audit verify`` names it); sending it would fail forever.
                    log.error("audit record unreadable target=%s position=%d", target, record.position)
                    await self._settle(store, target, record.position, 0, None)
                else:
                    await self._deliver_one(store, target, record.position, event, send)
                after = record.position

    async def _deliver_one(
        self,
        store: Store,
        target: Target,
        position: int,
        event: dict[str, Any],
        send: Callable[[dict[str, Any]], Awaitable[SinkHead | None]],
    ) -> None:
        failures = 0
        while True:
            try:
                answer = await send(event)
            except Exception as exc:
                refusal = _permanent_refusal(exc)
                if refusal is not None:
                    log.error(
                        "audit event refused target=%s id=%s position=%d sequence=%s status=%d%s",
                        target,
                        event.get("id"),
                        position,
                        event.get("sequence"),
                        refusal,
                        # 409: the sink holds this device's sequence under another event.
                        " (the sink holds this sequence under another event: was the trail rolled "
                        "back? run telehealth-agent audit verify --against-sink)"
                        if refusal == 409
                        else "",
                    )
                    await self._settle(store, target, position, refusal, None)
                    self._attempted(target, failed=False)
                    return
                failures += 1
                self._attempted(target, failed=True)
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
                await self._back_off(target, retry_delay(failures, *self._backoff))
                continue
            highest = self._highest_acknowledged(answer, event) if target == "sink" else None
            await self._settle(store, target, position, None, highest)
            self._attempted(target, failed=False)
            if failures:
                log.info(
                    "audit event delivered target=%s position=%d after_failures=%d",
                    target,
                    position,
                    failures,
                )
            return

    def _attempted(self, target: Target, *, failed: bool) -> None:
        self._failing[target] = failed
        self._changed.set()  # a flush waiting re-checks

    async def _back_off(self, target: Target, seconds: float) -> None:
        """``seconds``, cut short by a flush."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._retry_now[target].wait()

    def _highest_acknowledged(self, answer: SinkHead | None, event: dict[str, Any]) -> int | None:
        """The highest sequence of this device the sink is now known to hold: its answer (the
        highest with no gap below) or the event it just stored, whichever is higher. The event's
        own counts too: a refused event leaves a gap the sink's answer never passes."""
        own = event.get("sequence") if event.get("deviceId") == self.device_id else None
        highest = own if isinstance(own, int) and not isinstance(own, bool) else None
        if answer is not None:
            if answer.device_id != self.device_id:
                log.warning("audit sink answered for another device device=%s", answer.device_id)
            else:
                highest = max(highest or 0, answer.highest_sequence)
        if highest is None:
            return None
        status = self._db.status
        if highest > status.base + status.records:
            # Kept all the same: it is the sink's word, and `audit verify` reports the difference.
            log.error(
                "audit sink holds sequence %d of this device, beyond this trail's last (%d)",
                highest,
                status.base + status.records,
            )
        return highest

    async def _settle(
        self, store: Store, target: Target, position: int, refused_status: int | None, highest: int | None
    ) -> None:
        failures = 0
        while True:
            try:
                raised: int | None = None
                if isinstance(store, AuditDatabase):
                    if refused_status is None:
                        raised = await store.acknowledge(target, position, highest)
                    else:
                        await store.refuse(target, position, refused_status)
                else:
                    if refused_status is None:
                        await store.acknowledge(target, position)
                    else:
                        await store.refuse(target, position, refused_status)
                    if highest is not None:
                        raised = await self._db.keep_acknowledged(highest)
                if raised is not None:
                    self._save_acknowledged()
                return
            except Exception as exc:
                # Not written: it would be delivered again after a restart (the sink keeps one copy).
                failures += 1
                log.error("audit store update failed target=%s error=%s", target, describe_exception(exc))
                await asyncio.sleep(retry_delay(failures, *self._backoff))

    def _save_acknowledged(self) -> None:
        """Bring the file beside the store up to the store's value, behind (coalesced) and in order."""
        if self._acknowledged_writer is None:
            self._acknowledged_writer = asyncio.create_task(
                self._write_acknowledged(), name="audit-acknowledged-writer"
            )

    async def _write_acknowledged(self) -> None:
        try:
            while self._db.status.acknowledged > self._acknowledged_saved:
                value = self._db.status.acknowledged
                try:
                    await asyncio.to_thread(
                        write_acknowledged, self._acknowledgements, self._keys, self.device_id, value
                    )
                except OSError as exc:
                    # The store holds the value; the file is written again at the next one or start.
                    log.error(
                        "audit acknowledgement file not written file=%s error=%s",
                        self._acknowledgements,
                        describe_exception(exc),
                    )
                    return
                self._acknowledged_saved = value
        finally:
            self._acknowledged_writer = None

    # -- status --------------------------------------------------------------------------------

    def status(self) -> AuditStatus:
        """This device's store (a set-aside version 2 store's are ``legacy_status``)."""
        return self._db.status

    def legacy_status(self) -> AuditStatus | None:
        return None if self._legacy is None else self._legacy.status

    @property
    def has_sink(self) -> bool:
        """Whether records are delivered to a sink (without one they wait for a later run's)."""
        return self._sink is not None

    def _awaiting(self, target: Target) -> int:
        stores = [self._db.status] + ([] if self._legacy is None else [self._legacy.status])
        return sum(s.awaiting_sink if target == "sink" else s.awaiting_channel for s in stores)

    async def durability(self) -> SqliteDurability:
        """How the store's writes reach the disk (FULL: a recorded event survives a power cut)."""
        return await self._db.durability()

    async def prune(self, before: datetime, *, batch: int = PRUNE_BATCH) -> PruneReport:
        """Remove the records the sink acknowledged that were recorded before ``before``, in
        transactions of ``batch`` records (appends go on between them), then give the space back
        to the disk."""
        if self._state != "open":
            raise RuntimeError(f"the audit trail is {self._state if self._state != 'new' else 'not open'}")
        removed = unpublished = 0
        while True:
            step = await self._db.prune(before, batch)
            removed, unpublished = removed + step.records, unpublished + step.unpublished
            if step.records < batch or step.plan.held is not None:
                break
        plan = step.plan
        if removed:
            status = self._db.status
            log.info(
                "audit store pruned records=%d through_sequence=%d unpublished=%d kept=%d",
                removed,
                status.base + status.pruned,
                unpublished,
                status.records - status.pruned,
            )
            try:
                await self._db.compact()
            except sqlite3.OperationalError as exc:
                # Busy (``audit verify`` reading): the space comes back at the next prune.
                log.info("audit store not compacted error=%s", describe_exception(exc))
        if plan.held is not None:
            log.error("audit store pruning held at position=%d: %s", plan.held_at or 0, plan.held)
        backlog = await self._db.backlog()
        size = await asyncio.to_thread(files_bytes, self._db.path)
        return PruneReport(removed, unpublished, plan.held_at, plan.held, backlog, size)

    async def verify(self) -> ChainReport:
        """The chain on disk checked as this device (read-only, in a thread)."""
        return await asyncio.to_thread(
            verify_store, self._db.path, self._keys, self.device_id, self._acknowledgements
        )

    async def wait_delivered(self, within: float) -> bool:
        """True once everything recorded is acknowledged by the sink and (with a bus) the channel."""

        def delivered() -> bool:
            channel_done = self._bus is None or self._awaiting("channel") == 0
            return not self._waiting and self._writer is None and self._awaiting("sink") == 0 and channel_done

        try:
            await asyncio.wait_for(self._until(delivered), within)
        except TimeoutError:
            return False
        return True

    async def flush(self, target: Target, within: float) -> bool:
        """Deliver to ``target`` what it lacks for up to ``within`` s: True once it holds everything
        recorded. Gives up earlier, False, once an attempt made since this call failed with none
        succeeding since (the sink or the relay refusing, the network gone: waiting would only sit
        out back-offs), or when nothing delivers to it. A back-off under way is cut short first, so
        it tries once more now. What is left is delivered after the next start."""
        self._failing[target] = False
        self._retry_now[target].set()
        self._retry_now[target] = asyncio.Event()

        def delivered() -> bool:
            return not self._waiting and self._writer is None and self._awaiting(target) == 0

        def settled() -> bool:
            task = self._sink_task if target == "sink" else self._channel_task
            return delivered() or self._failing[target] or task is None or task.done()

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._until(settled)
        return delivered()

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


def verify_chain(state_dir: Path, keys: ChainKeys, device_id: str) -> ChainReport:
    """Check the device's store and the acknowledgements kept beside it; AuditStoreError only if
    there is no store file at all."""
    return verify_store(store_path(state_dir), keys, device_id, acknowledgement_path(state_dir))


def verify_legacy_chain(path: Path, keys: LegacyChainKeys) -> ChainReport:
    """Check a version 2 store (set aside, or not yet upgraded) under the cipher keys."""
    return verify_legacy_store(path, keys)


def read_status(state_dir: Path) -> AuditStatus:
    """The counts (check the chain first: they are not verified); AuditStoreError if there is no
    store; DamagedStoreError if the file is not a readable one."""
    return read_store_status(store_path(state_dir))


def read_last(state_dir: Path) -> LastRecord | None:
    """The last record's position and time, to compare with the sink."""
    return read_last_record(store_path(state_dir))
