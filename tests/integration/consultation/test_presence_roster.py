"""Presence and the roster: the provider's queue shows whether each waiting patient is there (its
join, leave and timeout), and the patient is told who joined and who left, with their roles."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from telehealth_client import events
from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.consultation.roster import ChangeKind, RosterRole
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_devstack.network import CuttableLink
from tests.support.consultation import (
    CHECK_IN,
    CONSULTATION,
    PATIENT,
    PROVIDER,
    SPECIALIST,
    Parts,
    RecordingHub,
    check_in_and_join,
)

pytestmark = pytest.mark.integration


def changed(user_id: str, kind: ChangeKind) -> Callable[[Any], bool]:
    return lambda e: (
        isinstance(e, events.RosterChanged)
        and any(c.user_id == user_id and c.kind is kind for c in e.changes)
    )


def presence_of_patient(provider: ProviderEndpoint) -> bool:
    [waiting] = provider.queue
    assert (waiting.consultation_id, waiting.patient_id) == (CONSULTATION, PATIENT)
    return waiting.present


async def test_the_queue_shows_a_waiting_patients_join_timeout_and_leave(parts: Parts) -> None:
    provider_hub, patient_hub = RecordingHub(), RecordingHub()
    provider = await parts.provider(provider_hub)
    await parts.record_consent()
    async with CuttableLink(parts.stack.relay.origin) as link:
        # The kiosk's presence expires 5 s after its network goes (the relay's sweep is 1 s).
        patient = parts.patient(patient_hub, origin=link.origin, presence_timeout_seconds=5)
        await patient.check_in(**CHECK_IN)
        await provider_hub.wait_state(S.CHECKED_IN)
        await provider_hub.wait_for(changed(PATIENT, ChangeKind.PRESENT))
        assert presence_of_patient(provider) is True

        link.cut()  # the kiosk's network is gone: no leave, its presence times out
        await provider_hub.wait_for(changed(PATIENT, ChangeKind.ABSENT), within=20.0)
        assert presence_of_patient(provider) is False  # still queued, shown as away

        link.restore()
        await provider_hub.wait_for(changed(PATIENT, ChangeKind.PRESENT), count=2, within=20.0)
        assert presence_of_patient(provider) is True

        await patient.aclose()  # the kiosk agent stops (a restart): a presence leave
        await provider_hub.wait_for(changed(PATIENT, ChangeKind.ABSENT), count=2)
        assert presence_of_patient(provider) is False
        assert provider.session(CONSULTATION).consultation.state is S.CHECKED_IN


async def test_the_patient_is_told_who_joined_and_who_left_with_their_roles(parts: Parts) -> None:
    provider_hub, specialist_hub, patient_hub = RecordingHub(), RecordingHub(), RecordingHub()
    provider = await parts.provider(provider_hub)
    specialist = await parts.provider(specialist_hub, SPECIALIST)
    await parts.record_consent()
    patient = parts.patient(patient_hub)
    await check_in_and_join(patient, provider, patient_hub, provider_hub)
    await provider.invite(CONSULTATION, SPECIALIST, "specialist")
    await specialist_hub.wait_for(lambda e: isinstance(e, events.InvitationReceived))
    invited = await specialist.accept(CONSULTATION)
    await patient_hub.wait_for(changed(SPECIALIST, ChangeKind.JOINED))
    await patient_hub.wait_for(changed(SPECIALIST, ChangeKind.PRESENT))
    await provider.remove(CONSULTATION, SPECIALIST)
    assert await invited.wait_closed() == "removed"
    # Removal is how the patient learns that the specialist left: its presence leave may be
    # refused (the revoke can overtake it), and then only a presence timeout follows.
    await patient_hub.wait_for(changed(SPECIALIST, ChangeKind.REMOVED))

    seen = [
        (c.user_id, c.role, c.kind)
        for e in patient_hub.items
        if isinstance(e, events.RosterChanged) and e.consultation_id == CONSULTATION
        for c in e.changes
    ]
    lifecycle = [entry for entry in seen if entry[2] not in (ChangeKind.PRESENT, ChangeKind.ABSENT)]
    assert lifecycle == [
        (PATIENT, RosterRole.PATIENT, ChangeKind.JOINED),
        (PROVIDER, RosterRole.PROVIDER, ChangeKind.JOINED),
        (SPECIALIST, RosterRole.SPECIALIST, ChangeKind.INVITED),
        (SPECIALIST, RosterRole.SPECIALIST, ChangeKind.JOINED),
        (SPECIALIST, RosterRole.SPECIALIST, ChangeKind.REMOVED),
    ]
    assert (SPECIALIST, RosterRole.SPECIALIST, ChangeKind.PRESENT) in seen
    assert (PROVIDER, RosterRole.PROVIDER, ChangeKind.PRESENT) in seen
