"""Check-in needs granted, unexpired consent: refused by the token server, and by the agent's own
reading of App Context when the token server says yes. Nothing is published when it is refused."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from telehealth_client import events
from telehealth_client.consultation.patient import CheckInRefused
from telehealth_client.protocol import channels
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from tests.support.consultation import (
    CHECK_IN,
    PATIENT,
    PROVIDER,
    Parts,
    RecordingHub,
    bus_template,
)

pytestmark = pytest.mark.integration


async def check_in(parts: Parts, hub: RecordingHub) -> None:
    patient = parts.patient(hub)
    with pytest.raises(CheckInRefused) as refused:
        await patient.check_in(**CHECK_IN)
    assert patient.idle
    raise refused.value


async def nothing_published(parts: Parts, hub: RecordingHub) -> None:
    provider = await parts.provider(RecordingHub())
    assert await provider.bus.history(channels.waiting_room(PROVIDER)) == []
    assert await provider.bus.history(channels.notification(PROVIDER)) == []
    assert provider.queue == []
    assert not [e for e in hub.items if isinstance(e, events.StateChanged)]
    assert not (parts.tmp_path / "kiosk" / "consultation.json").exists()


@pytest.mark.parametrize(
    ("consent", "reason"),
    [
        (None, "missing"),
        ((False, None), "not granted"),
        ((True, "2020-01-01T00:00:00.000Z"), "expired"),
    ],
)
async def test_the_token_server_refuses_and_the_check_in_says_why(
    parts: Parts, consent: tuple[bool, str | None] | None, reason: str
) -> None:
    if consent is not None:
        await parts.record_consent(*consent)
    hub = RecordingHub()
    with pytest.raises(CheckInRefused) as refused:
        await check_in(parts, hub)
    assert (refused.value.field, refused.value.reason) == ("consent", reason)
    assert str(refused.value) == f"check-in refused: consent: {reason}"
    await nothing_published(parts, hub)


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        ({"unrelated": "x"}, "missing"),
        ({"consent_telehealth": json.dumps({"granted": False, "expiresAt": None})}, "not granted"),
        (
            {"consent_telehealth": json.dumps({"granted": True, "expiresAt": "2020-01-01T00:00:00Z"})},
            "expired",
        ),
    ],
)
async def test_the_agent_reads_the_consent_itself_before_publishing(
    parts: Parts, stored: dict[str, str], reason: str
) -> None:
    # The clinic's record says granted (so it issues the token), App Context says otherwise.
    await parts.record_consent(True, None)
    admin = PubNubBus(replace(bus_template(parts.stack, "admin"), secret_key=parts.stack.keys.secret_key))
    try:
        await admin.set_user_metadata(PATIENT, stored)
    finally:
        await admin.aclose()
    hub = RecordingHub()
    with pytest.raises(CheckInRefused) as refused:
        await check_in(parts, hub)
    assert (refused.value.field, refused.value.reason) == ("consent", reason)
    await nothing_published(parts, hub)
