"""Emergency escalation on the real development stack: three providers of one department (all on
call unless a test changes the clinic's roster), each a real ProviderEndpoint with its own
outbox and audit trail, and raw buses that read a provider's notification channel with that
provider's own standing token."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from typing import Any

from telehealth_client import events
from telehealth_client.audit.trail import store_path
from telehealth_client.connector import Connector
from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.durability import Durable
from telehealth_client.emergency.desk import EmergencyDesk
from telehealth_client.protocol import channels
from telehealth_client.pubsub.bus import ConnectionStatus, Envelope, StatusChange
from tests.support.bus import Inbox
from tests.support.consultation import (
    DEPARTMENT,
    PATIENT,
    PROVIDER,
    SPECIALIST,
    WAIT,
    Parts,
    RecordingClinic,
    RecordingHub,
    bus_template,
)

__all__ = ["DEPARTMENT", "PATIENT", "PROVIDER", "SPECIALIST", "WAIT"]


OTHER = "dr-park"  # a third provider of the department, on call too


ON_CALL = (PROVIDER, SPECIALIST, OTHER)


CONSULTATION = f"consultation.{PROVIDER}.{PATIENT}"


EMERGENCY_CHANNEL = channels.emergency(DEPARTMENT)


CANARY = "CANARY-7f3a9 patient collapsed, history of arrhythmia"


def escalation_update(escalation_id: str | None = None, **fields: Any) -> Callable[[object], bool]:
    """Matches an ``EmergencyUpdated`` for ``escalation_id`` (any if None) with ``fields``."""

    def matches(event: object) -> bool:
        if not isinstance(event, events.EmergencyUpdated):
            return False
        if escalation_id is not None and event.escalation_id != escalation_id:
            return False
        return all(getattr(event, name) == value for name, value in fields.items())

    return matches


def alert(escalation_id: str) -> Callable[[object], bool]:
    return lambda e: isinstance(e, events.EmergencyAlert) and e.escalation_id == escalation_id


class Staff:
    """A provider endpoint with its durable state and the hub it reports to."""

    def __init__(self, endpoint: ProviderEndpoint, hub: RecordingHub, durable: Durable) -> None:
        self.endpoint, self.hub, self.durable = endpoint, hub, durable

    @property
    def desk(self) -> EmergencyDesk:
        desk = self.endpoint.emergency
        assert desk is not None
        return desk


async def staff(parts: Parts, user_id: str, name: str | None = None, **bus: Any) -> Staff:
    """A started provider endpoint of the department with its own outbox and audit trail
    (``tmp_path/name``, default the user ID); ``bus``: ``BusConfig`` changes."""
    hub = RecordingHub()
    durable = await parts.durable(f"{name or user_id}-durable", user_id, outbox_backoff=(0.05, 0.5))
    endpoint = await parts.provider(hub, user_id, durable=durable, **bus)
    return Staff(endpoint, hub, durable)


class EmergencyParts(Parts):
    """``Parts`` that can also reach the clinic through a hop a test cuts (``CuttableLink``)."""

    def connector_via(self, user_id: str, clinic_origin: str, **bus: Any) -> Connector:
        """``user_id``'s connector whose clinic client goes to ``clinic_origin`` (``host:port``)."""
        credential = self.stack.users[user_id].credential
        clinic = RecordingClinic(f"http://{clinic_origin}", credential, timeout_seconds=2.0)
        self._closers.append(clinic.aclose)
        return Connector(replace(bus_template(self.stack, user_id), **bus), clinic)


async def notification_reader(parts: Parts, user_id: str) -> Inbox:
    """``notification.{user_id}`` read with ``user_id``'s own standing token, as its phone would."""
    grant = await parts.clinic(user_id).request_token(user_id, "provider", departmentId=DEPARTMENT)
    bus = parts.raw_bus(user_id, grant.token)
    inbox = Inbox()
    connected = asyncio.Event()

    def on_status(change: StatusChange) -> None:
        if change.status is ConnectionStatus.CONNECTED:
            connected.set()

    bus.add_status_listener(on_status)
    await bus.subscribe([channels.notification(user_id)], inbox)
    await asyncio.wait_for(connected.wait(), WAIT)
    return inbox


def envelopes_of(inbox: Inbox, escalation_id: str) -> list[Envelope]:
    return [
        e
        for e in inbox.items
        if isinstance(e.message, dict) and e.message.get("escalationId") == escalation_id
    ]


def stored_events(durable: Durable) -> list[dict[str, Any]]:
    """The audit events in ``durable``'s own store, oldest first."""
    with closing(sqlite3.connect(store_path(durable.state_dir))) as db:
        return [json.loads(row[0]) for row in db.execute("SELECT event FROM records ORDER BY rowid")]
