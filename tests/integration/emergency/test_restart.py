"""An open escalation survives a restart: a new desk on the same state directory and outbox shows
it open, reason included, before anything is read from the channel (the relay is out of reach);
the sealed file holds no clear text; a resolution queued then goes out when the link returns and
the sealed file is gone once nothing is left to finish."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from telehealth_client.audit.trail import ChainKeys
from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.durability import Durable
from telehealth_client.emergency.desk import STORE_NAME, EmergencyDesk
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_devstack.network import CuttableLink
from tests.support.consultation import bus_template
from tests.support.emergency import (
    CANARY,
    CONSULTATION,
    DEPARTMENT,
    EMERGENCY_CHANNEL,
    PROVIDER,
    SPECIALIST,
    WAIT,
    EmergencyParts,
    RecordingHub,
    escalation_update,
    staff,
)
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration


def files_holding(directory: Path, marker: bytes) -> list[Path]:
    return [p for p in directory.rglob("*") if p.is_file() and marker in p.read_bytes()]


async def test_an_open_escalation_is_open_again_after_a_restart_before_the_channel_is_read(
    parts: EmergencyParts, log_lines: LogLines
) -> None:
    okafor = await staff(parts, SPECIALIST)
    state_dir = parts.tmp_path / PROVIDER
    durable_dir = parts.tmp_path / "lee-durable"
    secret = parts.stack.keys.cipher_key

    # First run: a provider endpoint escalates; delivered and notified; then it stops.
    audit = {"device_id": PROVIDER, "audit_keys": ChainKeys(parts.device_credential(PROVIDER))}
    durable = await Durable.open(
        durable_dir, secret=secret, organization_id=parts.stack.organization_id, **audit
    )
    hub = RecordingHub()
    endpoint = ProviderEndpoint(
        parts.connector(PROVIDER),
        hub,
        user_id=PROVIDER,
        department_id=DEPARTMENT,
        state_dir=state_dir,
        durable=durable,
    )
    try:
        await endpoint.start()
        assert endpoint.emergency is not None
        escalation = await endpoint.emergency.escalate(CONSULTATION, "critical", CANARY)
        await hub.wait_for(escalation_update(escalation.id, delivered=True, notified=2))
    finally:
        await endpoint.aclose()
        await durable.aclose()
    await okafor.hub.wait_for(escalation_update(escalation.id, status="active"))

    sealed = list(parts.tmp_path.rglob(STORE_NAME))
    assert len(sealed) == 1
    assert not files_holding(parts.tmp_path, b"CANARY")

    # Second run, the relay out of reach: the desk is open again from its sealed store alone.
    async with CuttableLink(parts.stack.agent_environment()["TELEHEALTH_ORIGIN"]) as link:
        link.cut()
        durable = await Durable.open(
            durable_dir,
            secret=secret,
            organization_id=parts.stack.organization_id,
            outbox_backoff=(0.05, 0.5),
            **audit,
        )
        token = (
            await parts.clinic(PROVIDER).request_token(PROVIDER, "provider", departmentId=DEPARTMENT)
        ).token
        bus = PubNubBus(replace(bus_template(parts.stack, PROVIDER), origin=link.origin, token=token))
        hub = RecordingHub()
        desk = EmergencyDesk(
            bus,
            parts.clinic(PROVIDER),
            durable.outbox,
            durable.router,
            hub,
            user_id=PROVIDER,
            department_id=DEPARTMENT,
            state_dir=durable_dir,  # the desk keeps its escalations beside the outbox
            sealer=durable.sealer,
            auditor=durable.auditor(PROVIDER, "provider"),
        )
        try:
            durable.attach(bus)
            await desk.start()
            await log_lines.wait_line("emergency history not read")
            [reopened] = desk.open
            assert (reopened.id, reopened.reason, reopened.severity, reopened.status) == (
                escalation.id,
                CANARY,
                "critical",
                "active",
            )
            assert reopened.delivered and reopened.notified == 2

            # Resolved while still cut: queued, then published when the link returns.
            resolved = await desk.resolve(escalation.id, "stabilised, transferred")
            assert resolved.status == "resolved" and desk.open == []
            link.restore()
            await okafor.hub.wait_for(escalation_update(escalation.id, status="resolved"))
            assert okafor.desk.open == []
            assert await durable.outbox.wait_drained(WAIT)
        finally:
            await desk.aclose()
            await durable.aclose()
            await bus.aclose()
    # Nothing left to finish: no sealed escalations remain.
    assert list(parts.tmp_path.rglob(STORE_NAME)) == []


async def test_an_escalation_saved_but_never_queued_is_sent_once_after_a_restart(
    parts: EmergencyParts,
) -> None:
    """The process died after sealing the escalation and before the outbox had it (here: the
    outbox file is gone): the next start queues it again and it reaches the channel once."""
    okafor = await staff(parts, SPECIALIST)
    async with CuttableLink(parts.stack.agent_environment()["TELEHEALTH_ORIGIN"]) as link:
        lee = await staff(parts, PROVIDER, name="first", origin=link.origin)
        link.cut()
        escalation = await lee.desk.escalate(CONSULTATION, "urgent", CANARY)
        assert not lee.desk.get(escalation.id).delivered  # type: ignore[union-attr]
        await lee.endpoint.aclose()
        await lee.durable.aclose()
    (parts.tmp_path / "first-durable" / "outbox.sqlite3").unlink()

    # Same state directory for the desk, a fresh outbox: the escalation is queued from the desk's file.
    hub = RecordingHub()
    durable = await parts.durable("first-durable", PROVIDER, outbox_backoff=(0.05, 0.5))
    endpoint = await parts.provider(hub, PROVIDER, durable=durable)
    desk = endpoint.emergency
    assert desk is not None and [e.id for e in desk.open] == [escalation.id]
    await hub.wait_for(escalation_update(escalation.id, delivered=True))
    await okafor.hub.wait_for(escalation_update(escalation.id, status="active"))
    assert await durable.outbox.wait_drained(WAIT)
    stored = await okafor.endpoint.bus.history(EMERGENCY_CHANNEL, limit=100)
    assert [e.message.get("id") for e in stored].count(escalation.id) == 1
