"""An invited specialist whose access is revoked without it reading PROVIDER_REMOVED (removed while
its network was down, or revoked by the clinic alone): its consultation token is refused (on its
subscribe when it comes back, or on its next publish), the clinic will not issue another (the
invitation ended), and its agent leaves the consultation cleanly: session closed, state file gone,
back on its standing token, connected and reachable, with no access-denied loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from telehealth_client import events
from telehealth_client.consultation import state_file
from telehealth_client.consultation.provider import CONSULTATIONS_DIR
from telehealth_client.consultation.roster import ChangeKind
from telehealth_client.consultation.session import SessionError
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.protocol.messages import ProviderJoined
from telehealth_client.pubsub.bus import ConnectionStatus, Envelope, StatusChange
from telehealth_devstack.network import CuttableLink
from tests.support.consultation import (
    CHECK_IN,
    CONSULTATION,
    PROVIDER,
    SPECIALIST,
    WAIT,
    Parts,
    RecordingHub,
)

pytestmark = pytest.mark.integration


async def test_a_specialist_removed_while_offline_leaves_when_its_token_is_refused(parts: Parts) -> None:
    provider_hub, specialist_hub, patient_hub = RecordingHub(), RecordingHub(), RecordingHub()
    provider = await parts.provider(provider_hub)
    async with CuttableLink(parts.stack.relay.origin) as link:
        specialist = await parts.provider(specialist_hub, SPECIALIST, origin=link.origin)
        await parts.record_consent()
        patient = parts.patient(patient_hub)
        await patient.check_in(**CHECK_IN)
        await provider_hub.wait_state(S.CHECKED_IN)
        await provider.join(CONSULTATION)
        await provider.start_consultation(CONSULTATION)
        await provider.invite(CONSULTATION, SPECIALIST, "specialist")
        await specialist_hub.wait_for(lambda e: isinstance(e, events.InvitationReceived))
        invited = await specialist.accept(CONSULTATION)
        saved_dir = parts.tmp_path / SPECIALIST / CONSULTATIONS_DIR / CONSULTATION
        assert state_file.load(saved_dir) is not None

        statuses: list[StatusChange] = []
        reconnected = asyncio.Event()

        def on_status(change: StatusChange) -> None:
            statuses.append(change)
            if change.status is ConnectionStatus.CONNECTED:
                reconnected.set()

        specialist.bus.add_status_listener(on_status)
        link.cut()
        await specialist_hub.wait_for(
            lambda e: isinstance(e, events.BusStatusChanged) and e.status is ConnectionStatus.RECONNECTING
        )
        assert await provider.remove(CONSULTATION, SPECIALIST) >= 1
        await patient_hub.wait_for(
            lambda e: (
                isinstance(e, events.RosterChanged)
                and any(c.user_id == SPECIALIST and c.kind is ChangeKind.REMOVED for c in e.changes)
            )
        )

        link.restore()
        assert await asyncio.wait_for(invited.wait_closed(), WAIT) == "access-denied"
        closed = await specialist_hub.wait_for(lambda e: isinstance(e, events.SessionClosed))
        assert closed == [events.SessionClosed(CONSULTATION, "access-denied")]
        assert CONSULTATION not in specialist.sessions
        assert state_file.load(saved_dir) is None
        await asyncio.wait_for(reconnected.wait(), WAIT)  # on its standing token again

        # Usable: a provider reaches it on its notification channel.
        received: asyncio.Queue[Envelope] = asyncio.Queue()
        specialist.notification_listeners.append(received.put)
        await provider.bus.publish(f"notification.{SPECIALIST}", {"type": "PATIENT_READY", "title": "t"})
        envelope = await asyncio.wait_for(received.get(), WAIT)
        assert envelope.publisher == PROVIDER
        # No loop: denied at most until the session closed, connected since.
        assert statuses[-1].status is ConnectionStatus.CONNECTED
        assert specialist.bus.status is ConnectionStatus.CONNECTED
        # The consultation goes on without it.
        await provider.wrap_up(CONSULTATION)
        await patient_hub.wait_state(S.WRAPPING_UP)


async def test_a_specialist_whose_access_is_revoked_leaves_at_once(parts: Parts) -> None:
    provider_hub, specialist_hub = RecordingHub(), RecordingHub()
    provider = await parts.provider(provider_hub)
    specialist = await parts.provider(specialist_hub, SPECIALIST)
    await parts.record_consent()
    patient = parts.patient(RecordingHub())
    await patient.check_in(**CHECK_IN)
    await provider_hub.wait_state(S.CHECKED_IN)
    await provider.join(CONSULTATION)
    await provider.invite(CONSULTATION, SPECIALIST, "specialist")
    await specialist_hub.wait_for(lambda e: isinstance(e, events.InvitationReceived))
    invited = await specialist.accept(CONSULTATION)

    # Revoked with no PROVIDER_REMOVED to read (the clinic ended the invitation): the relay ends
    # the specialist's held long-poll with 403 at once (PROTOCOL: a revoked token stops working,
    # also on a poll already waiting), the clinic refuses another token, and the agent leaves.
    assert await parts.clinics[PROVIDER].revoke_access(SPECIALIST, CONSULTATION) >= 1
    assert await asyncio.wait_for(invited.wait_closed(), WAIT) == "access-denied"
    await specialist_hub.wait_for(lambda e: isinstance(e, events.AccessDenied))
    with pytest.raises(SessionError):
        await invited.act(ProviderJoined(provider_id=SPECIALIST, timestamp=datetime.now(UTC)))
    assert CONSULTATION not in specialist.sessions
    assert state_file.load(parts.tmp_path / SPECIALIST / CONSULTATIONS_DIR / CONSULTATION) is None

    # Back on its standing token: reachable on its notification channel.
    received: asyncio.Queue[Envelope] = asyncio.Queue()
    specialist.notification_listeners.append(received.put)
    await provider.bus.publish(f"notification.{SPECIALIST}", {"type": "PATIENT_READY", "title": "t"})
    assert (await asyncio.wait_for(received.get(), WAIT)).publisher == PROVIDER
    assert specialist.bus.status is ConnectionStatus.CONNECTED
