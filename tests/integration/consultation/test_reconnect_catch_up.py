"""Catch-up after a bus reconnect: the kiosk's network drops mid-consultation and the relay is
restarted meanwhile (a new relay on the same state: history kept, the short live queue gone). What
the provider published during the outage reaches the patient once, in order, through history
(``caught_up_from``), not through the live stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from telehealth_client import events
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.pubsub.bus import ConnectionStatus
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.relay import Relay
from telehealth_devstack.stack import DevStack, DevStackKeys
from tests.support.consultation import (
    CHECK_IN,
    CONSULTATION,
    PROVIDER,
    SPECIALIST,
    Parts,
    RecordingHub,
    queue_update,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    running = DevStack(keys=DevStackKeys(), state_dir=tmp_path / "stack", providers=(PROVIDER, SPECIALIST))
    await running.start()
    try:
        yield running
    finally:
        relay = running.relay
        await running.stop()
        await relay.stop()  # the restarted relay, which the stack did not start


async def restart_relay(stack: DevStack) -> None:
    """Stop the relay and start a new one on the same port and state, as a restarted process."""
    old = stack.relay
    await old.stop()
    new = Relay(
        port=old.port,
        publish_key=stack.keys.publish_key,
        subscribe_key=stack.keys.subscribe_key,
        secret_key=stack.keys.secret_key,
        enforce_access=True,
        state_dir=old.state_dir,
    )
    await new.start()
    stack.relay = new


def bus_status(status: ConnectionStatus) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, events.BusStatusChanged) and e.status is status


async def test_what_was_published_while_the_kiosk_was_offline_is_applied_once_in_order(
    parts: Parts,
) -> None:
    provider_hub, patient_hub = RecordingHub(), RecordingHub()
    provider = await parts.provider(provider_hub)
    await parts.record_consent()
    async with CuttableLink(parts.stack.relay.origin) as link:
        patient = parts.patient(patient_hub, origin=link.origin)
        session = await patient.check_in(**CHECK_IN)
        await provider_hub.wait_state(S.CHECKED_IN)
        provider_session = provider.session(CONSULTATION)
        await provider_session.act(queue_update(4, 30))
        await patient_hub.wait_state(S.WAITING)

        link.cut()
        await patient_hub.wait_for(bus_status(ConnectionStatus.RECONNECTING))
        for position, minutes in ((3, 20), (2, 10)):
            await provider_session.act(queue_update(position, minutes))
        connected = bus_status(ConnectionStatus.CONNECTED)
        connections = len([e for e in provider_hub.items if connected(e)])
        await restart_relay(parts.stack)
        await provider_hub.wait_for(connected, count=connections + 1)
        await provider.join(CONSULTATION)  # on the new relay, still while the kiosk is offline

        link.restore()
        await patient_hub.wait_state(S.CONNECTING)
        queue = [
            (e.position, e.estimated_wait_minutes)
            for e in patient_hub.items
            if isinstance(e, events.QueueUpdated)
        ]
        assert queue == [(4, 30), (3, 20), (2, 10)]
        assert patient_hub.states() == ["checked-in", "waiting", "connecting"]
        assert session.consultation.queue_position == 2

        # The live stream goes on from there.
        await provider.start_consultation(CONSULTATION)
        await patient_hub.wait_state(S.IN_PROGRESS)
        assert patient_hub.states() == ["checked-in", "waiting", "connecting", "in-progress"]
        assert len([e for e in patient_hub.items if isinstance(e, events.QueueUpdated)]) == 3
