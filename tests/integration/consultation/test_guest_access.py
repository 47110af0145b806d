"""Every invitation and nurse assignment ends with the consultation (PROTOCOL.md, "Who calls what"):
the channel ``consultation.{providerId}.{patientId}`` is reused by the same pair's next
consultation, so the provider endpoint revokes each guest's access when the consultation ends or is
cancelled, and at its next start for one that ended while its revocations could not be done.

Real relay (Access Manager enforced), clinic stand-in and PubNub SDK through the ``parts`` fixtures.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from telehealth_client import events
from telehealth_client.consultation.guest_access import LEDGER_FILE
from telehealth_client.consultation.provider import ProviderEndpoint
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.pubsub.bus import AccessDeniedError, Envelope
from telehealth_client.security.clinic_client import ClinicError
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.stack import DevStack
from tests.support.consultation import (
    CHECK_IN,
    CONSULTATION,
    DEPARTMENT,
    PROVIDER,
    SPECIALIST,
    WAIT,
    Parts,
    RecordingHub,
)
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration

NURSE = "rn-park"


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(PROVIDER, SPECIALIST), nurses=(NURSE,)) as running:
        yield running


async def _joined_consultation(parts: Parts, provider: ProviderEndpoint, provider_hub: RecordingHub) -> None:
    await parts.record_consent()
    patient = parts.patient(RecordingHub())
    await patient.check_in(**CHECK_IN)
    await provider_hub.wait_state(S.CHECKED_IN)
    await provider.join(CONSULTATION)


async def _revoked(hub: RecordingHub, user_id: str) -> events.GuestAccessRevoked:
    found = await hub.wait_for(lambda e: isinstance(e, events.GuestAccessRevoked) and e.user_id == user_id)
    return found[0]  # type: ignore[no-any-return]


async def _refused_token(parts: Parts, user_id: str, role: str) -> ClinicError:
    with pytest.raises(ClinicError) as refused:
        await parts.clinic(user_id).request_token(
            user_id, role, consultationChannel=CONSULTATION, departmentId=DEPARTMENT
        )
    return refused.value


async def test_ending_a_consultation_revokes_a_specialist_never_removed(parts: Parts) -> None:
    provider_hub, specialist_hub = RecordingHub(), RecordingHub()
    provider = await parts.provider(provider_hub)
    specialist = await parts.provider(specialist_hub, SPECIALIST)
    await _joined_consultation(parts, provider, provider_hub)
    await provider.invite(CONSULTATION, SPECIALIST, "specialist")
    await specialist_hub.wait_for(lambda e: isinstance(e, events.InvitationReceived))
    invited = await specialist.accept(CONSULTATION)
    invited_token = parts.clinics[SPECIALIST].token_for(CONSULTATION)

    await provider.end(CONSULTATION, follow_up_required=False)

    revoked = await _revoked(provider_hub, SPECIALIST)
    assert revoked.consultation_id == CONSULTATION and revoked.tokens >= 1
    # The specialist read the end (published before the revocation) and left the consultation.
    assert await asyncio.wait_for(invited.wait_closed(), WAIT) in ("completed", "access-denied")
    # No new token naming the consultation (the invitation ended), and the old one reads nothing:
    # the channel is the one this pair's next consultation uses.
    assert (await _refused_token(parts, SPECIALIST, "provider")).status == 403
    with pytest.raises(AccessDeniedError):
        await parts.raw_bus(SPECIALIST, invited_token).history(CONSULTATION)
    assert not await parts.stack.clinic.invitation_stands(CONSULTATION, SPECIALIST)  # type: ignore[union-attr]

    # Back on its standing token: reachable on its notification channel.
    received: asyncio.Queue[Envelope] = asyncio.Queue()
    specialist.notification_listeners.append(received.put)
    await provider.bus.publish(f"notification.{SPECIALIST}", {"type": "PATIENT_READY", "title": "t"})
    assert (await asyncio.wait_for(received.get(), WAIT)).publisher == PROVIDER
    # Nothing left to revoke on disk.
    assert provider.guests is not None and provider.guests.guests(CONSULTATION) == []


async def test_a_cancelled_consultation_ends_its_nurse_assignment(parts: Parts) -> None:
    provider_hub = RecordingHub()
    provider = await parts.provider(provider_hub)
    await _joined_consultation(parts, provider, provider_hub)
    await provider.assign_nurse(CONSULTATION, NURSE)
    # Assigned: the nurse may now have a token naming the consultation.
    nurse_clinic = parts.clinic(NURSE)
    await nurse_clinic.request_token(
        NURSE, "nurse", consultationChannel=CONSULTATION, departmentId=DEPARTMENT
    )

    await provider.cancel(CONSULTATION, "technical")

    revoked = await _revoked(provider_hub, NURSE)
    assert revoked.tokens >= 1
    assert (await _refused_token(parts, NURSE, "nurse")).status == 403


async def test_guests_of_a_consultation_that_ended_while_the_clinic_was_away_are_revoked_at_next_start(
    parts: Parts,
) -> None:
    provider_hub = RecordingHub()
    assert parts.stack.clinic is not None
    state_dir = parts.tmp_path / "provider-cart"
    async with CuttableLink(f"127.0.0.1:{parts.stack.clinic.port}") as clinic_link:
        provider = ProviderEndpoint(
            parts.connector(PROVIDER, clinic_url=f"http://{clinic_link.origin}"),
            provider_hub,
            user_id=PROVIDER,
            department_id=DEPARTMENT,
            state_dir=state_dir,
        )
        try:
            await provider.start()
            await _joined_consultation(parts, provider, provider_hub)
            await provider.invite(CONSULTATION, SPECIALIST, "observer")
            clinic_link.cut()
            await provider.end(CONSULTATION, follow_up_required=True)
            await provider_hub.wait_for(
                lambda e: isinstance(e, events.SessionClosed) and e.consultation_id == CONSULTATION
            )
        finally:
            await provider.aclose()  # stops retrying; the ledger keeps the guest
    assert (state_dir / LEDGER_FILE).exists()
    assert not [e for e in provider_hub.items if isinstance(e, events.GuestAccessRevoked)]
    assert await parts.stack.clinic.invitation_stands(CONSULTATION, SPECIALIST)

    restarted_hub = RecordingHub()
    await parts.provider(restarted_hub, state_dir=state_dir)

    await _revoked(restarted_hub, SPECIALIST)
    assert not await parts.stack.clinic.invitation_stands(CONSULTATION, SPECIALIST)
    assert (await _refused_token(parts, SPECIALIST, "provider")).status == 403


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "JSONDecodeError"),
        (b'{"consultations": []}', "consultations: must be an object"),
        (b'{"consultations": {"consultation.dr-lee.pat-1": ["a.b"]}}', "a guest is not a user ID"),
        (b'{"consultations": {"waiting-room.dr-lee": ["dr-okafor"]}}', "a key is not a consultation ID"),
    ],
    ids=["not-json", "not-an-object", "bad-guest", "bad-consultation"],
)
async def test_an_unusable_guest_ledger_is_set_aside_and_named(
    parts: Parts, log_lines: LogLines, body: bytes, reason: str
) -> None:
    state_dir = parts.tmp_path / "provider-cart"
    state_dir.mkdir()
    (state_dir / LEDGER_FILE).write_bytes(body)

    provider = await parts.provider(RecordingHub(), state_dir=state_dir)

    line = await log_lines.wait_line("guest access ledger unusable", reason)
    assert "dr-okafor" not in line and "pat-1" not in line  # the reason names fields, not values
    assert (state_dir / (LEDGER_FILE + ".unusable")).read_bytes() == body
    assert provider.guests is not None and provider.guests.guests(CONSULTATION) == []
