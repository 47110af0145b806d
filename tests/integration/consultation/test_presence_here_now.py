"""Presence asked, not only heard: the provider's cart asks here_now for its consultations when it
starts and after its bus reconnects, so the queue shows who is really waiting even when the join or
the leave happened while the cart was off or cut off (its events were never delivered)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from telehealth_client import events
from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.consultation.roster import ChangeKind
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.pubsub.bus import ConnectionStatus
from telehealth_devstack.network import CuttableLink
from tests.support.consultation import CHECK_IN, CONSULTATION, PATIENT, Parts, RecordingHub

pytestmark = pytest.mark.integration

# The relay keeps this many recent events per channel for subscribers resuming from a timetoken
# (Relay's max_messages_per_channel), as PubNub keeps a bounded queue: past it, older ones are lost.
RELAY_QUEUE = 1000


def changed(user_id: str, kind: ChangeKind) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, events.RosterChanged)
        and any(c.user_id == user_id and c.kind is kind for c in e.changes)
    )


def bus_status(status: ConnectionStatus) -> Callable[[Any], bool]:
    return lambda e: isinstance(e, events.BusStatusChanged) and e.status is status


def patient_present(provider: ProviderEndpoint) -> bool:
    [waiting] = provider.queue
    assert (waiting.consultation_id, waiting.patient_id, waiting.state) == (
        CONSULTATION,
        PATIENT,
        S.CHECKED_IN,
    )
    return waiting.present


async def test_a_cart_started_after_the_check_in_shows_the_patient_present(parts: Parts) -> None:
    await parts.record_consent()
    patient_hub = RecordingHub()
    patient = parts.patient(patient_hub)
    await patient.check_in(**CHECK_IN)
    assert parts.stack.relay.occupants(CONSULTATION) == [PATIENT]

    provider = await parts.provider(RecordingHub())  # its join came before the cart listened
    assert patient_present(provider) is True


async def test_a_patient_who_left_before_the_cart_started_shows_absent(parts: Parts) -> None:
    await parts.record_consent()
    patient = parts.patient(RecordingHub())
    await patient.check_in(**CHECK_IN)
    await patient.aclose()  # the kiosk stops: a presence leave, the consultation still waits
    assert parts.stack.relay.occupants(CONSULTATION) == []

    provider = await parts.provider(RecordingHub())
    assert patient_present(provider) is False


async def test_a_cart_that_missed_a_leave_while_cut_off_shows_the_patient_absent(parts: Parts) -> None:
    provider_hub = RecordingHub()
    relay = parts.stack.relay
    async with CuttableLink(relay.origin) as link:
        provider = await parts.provider(provider_hub, origin=link.origin, reconnect_max_seconds=1)
        await parts.record_consent()
        patient = parts.patient(RecordingHub())
        await patient.check_in(**CHECK_IN)
        await provider_hub.wait_for(changed(PATIENT, ChangeKind.PRESENT))

        link.cut()
        await provider_hub.wait_for(bus_status(ConnectionStatus.RECONNECTING))
        await patient.aclose()  # its leave goes out while the cart cannot hear it
        # Enough other presence on the channel meanwhile that the leave falls out of the queue a
        # resuming subscriber reads (strangers: the roster ignores them).
        for visitor in range(RELAY_QUEUE):
            payload = {
                "action": "join",
                "uuid": f"visitor-{visitor}",
                "occupancy": visitor + 1,
                "timestamp": 0,
            }
            relay.inject_event(f"{CONSULTATION}-pnpres", 0, payload)
        assert all(m.payload.get("uuid") != PATIENT for m in relay.recent_messages(f"{CONSULTATION}-pnpres"))

        link.restore()
        await provider_hub.wait_for(changed(PATIENT, ChangeKind.ABSENT), within=20.0)
        assert patient_present(provider) is False


async def test_a_presence_event_newer_than_the_answer_wins_over_it(parts: Parts) -> None:
    provider_hub = RecordingHub()
    provider = await parts.provider(provider_hub)
    await parts.record_consent()
    patient = parts.patient(RecordingHub())
    await patient.check_in(**CHECK_IN)
    await provider_hub.wait_for(changed(PATIENT, ChangeKind.PRESENT))
    session = provider.session(CONSULTATION)

    asked_at = session.presence_mark  # a here_now asked now...
    await patient.aclose()
    await provider_hub.wait_for(changed(PATIENT, ChangeKind.ABSENT))  # ...and a leave heard after it
    await session.sync_presence(frozenset({PATIENT}), asked_at)  # the answer, older than the leave
    assert patient_present(provider) is False

    await session.sync_presence(frozenset({PATIENT}), session.presence_mark)  # a newer answer counts
    assert patient_present(provider) is True
