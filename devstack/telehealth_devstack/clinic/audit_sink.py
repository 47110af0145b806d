"""The audit sink's HTTP side: ``POST /api/audit-events``, ``GET /api/audit-events/head`` and the
auditor's ``GET /api/audit-events`` (PROTOCOL.md, "Audit events").

An event's ``actor`` must be one its credential acts for, its ``organizationId`` the clinic's, and
its ``deviceId`` (if sent; else the credential's own device is meant) the credential's own device
ID. The answer, ``201 {deviceId, highestSequence}`` (plus ``id`` and ``stored``, which say whether
this post stored it), tells the device the highest sequence the sink holds for it with no gap below:
an agent compares it with its local trail to see one that is shorter or older. The same ``id`` twice
is stored once; the same (deviceId, sequence) under another ``id`` is refused 409 naming
``sequence``: a device rolled back and re-using its numbers must not be merged silently.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from telehealth_client.protocol.channels import InvalidIdError, validate_id

from .audit_store import AuditStore, SequenceTaken
from .http import FieldError, device_identity, read_object, validate
from .identity import KnownIds, NotAllowed
from .models import AuditEvent

logger = logging.getLogger(__name__)


def _acknowledgement(device_id: str, highest_sequence: int) -> dict[str, Any]:
    return {"deviceId": device_id, "highestSequence": highest_sequence}


class AuditSink:
    """The organization's audit sink; ``open()`` before serving, ``close()`` after."""

    def __init__(self, path: Path | None, organization_id: str, known: KnownIds) -> None:
        self.store = AuditStore(path)
        self._organization_id = organization_id
        self._known = known

    async def open(self) -> None:
        await self.store.open()

    async def close(self) -> None:
        await self.store.close()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/api/audit-events", self._add),
            web.get("/api/audit-events", self._list),
            web.get("/api/audit-events/head", self._head),
        ]

    async def _add(self, request: web.Request) -> web.Response:
        raw = await read_object(request)
        event = validate(AuditEvent, raw)
        caller = device_identity(request)
        caller.check_audit_actor(event.actor.userId, event.actor.role, self._known)
        if event.organizationId != self._organization_id:
            # The sink is this organization's audit trail: another's events do not belong in it.
            raise NotAllowed(
                "organizationId", f"must be this clinic's organization ({self._organization_id})"
            )
        device_id = caller.device_id if event.deviceId is None else event.deviceId
        if device_id is None:  # an auditor's: refused as the actor already, checked again here
            raise NotAllowed("Authorization", "an auditor's device credential records no events")
        caller.check_device_id(device_id)
        # Stored as received (unknown fields included) but with the id in canonical form,
        # so one event in two spellings is still stored once.
        raw["id"] = event.id
        try:
            appended = await self.store.append(event.id, raw, device_id, event.sequence)
        except SequenceTaken:
            raise FieldError(
                "sequence", "this device already recorded another event under this sequence", status=409
            ) from None
        answer = {"id": event.id, "stored": appended.stored}
        answer.update(_acknowledgement(device_id, appended.highest_sequence))
        return web.json_response(answer, status=201)

    async def _head(self, request: web.Request) -> web.Response:
        value = request.query.get("deviceId")
        if value is None:
            raise FieldError("deviceId", "is required")
        try:
            device_id = validate_id(value, "deviceId")
        except InvalidIdError as exc:
            raise FieldError(exc.field, exc.reason) from None
        device_identity(request).check_reads_head(device_id)
        return web.json_response(_acknowledgement(device_id, await self.store.highest_sequence(device_id)))

    async def _list(self, request: web.Request) -> web.Response:
        device_identity(request).check_reads_audit()
        return web.json_response({"events": await self.store.events()})
