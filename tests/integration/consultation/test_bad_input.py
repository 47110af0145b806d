"""Bad input on the consultation channel, published with real tokens by real buses: each message is
dropped or refused with a logged reason (no payload value) and changes nothing; the next good
message is applied as usual."""

from __future__ import annotations

from typing import Any

import pytest

from telehealth_client import events
from telehealth_client.consultation import state_file
from telehealth_client.protocol.messages import ConsultationState as S
from tests.support.consultation import (
    CONSULTATION,
    PATIENT,
    PROVIDER,
    Parts,
    check_in_and_wait,
)
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration

NOW = "2026-11-22T14:03:07.123Z"
MARKER = "PHI-MARKER-7731"  # a value that must never reach a log line


def cases() -> list[tuple[str, str, dict[str, Any], tuple[str, ...]]]:
    """(name, who publishes, payload, what the patient's log line says)."""
    return [
        (
            "forged sender",
            "provider",
            {
                "action": "CONSULTATION_CANCELLED",
                "cancelledBy": PATIENT,
                "reason": "patient-left",
                "timestamp": NOW,
            },
            ("dropped", "field=cancelledBy", "must equal the publisher"),
        ),
        (
            "unknown action",
            "provider",
            {"action": "TELEPORT", "providerId": PROVIDER, "timestamp": NOW, "note": MARKER},
            ("dropped", "field=action", "is not a known value"),
        ),
        (
            "wrong types",
            "provider",
            {"action": "PROVIDER_JOINED", "providerId": 123, "state": "connecting", "timestamp": NOW},
            ("dropped", "field=providerId", "must be"),
        ),
        (
            "patient ends",
            "patient",
            {
                "action": "CONSULTATION_ENDED",
                "providerId": PATIENT,
                "state": "completed",
                "summary": {"duration": 5, "followUpRequired": False},
                "timestamp": NOW,
            },
            ("refused", "action=CONSULTATION_ENDED", "code=forbidden"),
        ),
        (
            "illegal in this state",
            "provider",
            {"action": "WRAP_UP_STARTED", "providerId": PROVIDER, "state": "wrapping-up", "timestamp": NOW},
            ("refused", "action=WRAP_UP_STARTED", "code=illegal-transition", "from waiting to wrapping-up"),
        ),
    ]


@pytest.mark.parametrize(("name", "publisher", "payload", "logged"), cases(), ids=[c[0] for c in cases()])
async def test_bad_lifecycle_messages_are_dropped_with_a_reason_and_change_nothing(
    parts: Parts,
    log_lines: LogLines,
    name: str,
    publisher: str,
    payload: dict[str, Any],
    logged: tuple[str, ...],
) -> None:
    provider_hub, patient_hub, provider, patient = await parts.consented_pair()
    session = await check_in_and_wait(patient, provider, patient_hub, provider_hub)
    # A waiting consultation reaches the provider through its wildcard subscription: no presence
    # join of the provider comes before it joins.
    before = session.consultation
    assert await session.flush()  # the state file is written just behind the transitions
    saved = state_file.load(parts.tmp_path / "kiosk")
    events_before = len(patient_hub.items)

    bus = provider.bus if publisher == "provider" else session.bus
    await bus.publish(CONSULTATION, payload)
    line = await log_lines.wait_line(f"consultation={CONSULTATION}", f"channel={CONSULTATION}", *logged)
    assert MARKER not in line
    assert session.consultation == before
    assert state_file.load(parts.tmp_path / "kiosk") == saved

    # The next good message is applied: the bad one came before it and changed nothing.
    await provider.join(CONSULTATION)
    await patient_hub.wait_state(S.CONNECTING)
    changed = patient_hub.items[events_before:]
    assert [str(e.kind) for e in changed if not isinstance(e, events.StateSaved)][:1] == ["state-changed"]
    assert saved is not None and saved.state is S.WAITING
    assert patient_hub.states() == ["checked-in", "waiting", "connecting"]
    assert all(MARKER not in text for text in log_lines.lines)
