"""The reported case through the two local APIs: a cart started after the kiosk checked its
patient in shows that patient present in ``GET /v1/waiting-room``, as the kiosk's status says."""

from __future__ import annotations

import pytest

from telehealth_devstack.stack import DevStack
from tests.support.api import CHECK_IN, CONSULTATION, PATIENT, PROVIDER, Agents, RunningAgent, record_consent

pytestmark = pytest.mark.integration


async def test_a_cart_started_after_the_check_in_lists_the_patient_present(
    kiosk: RunningAgent, agents: Agents, stack: DevStack
) -> None:
    await record_consent(stack)
    status, answer = await kiosk.api.post("/v1/check-in", CHECK_IN)
    assert status == 201, answer

    cart = await agents.start(PROVIDER)  # started once the patient already waits

    status, room = await cart.api.get("/v1/waiting-room")
    assert status == 200
    assert [(p["consultationId"], p["patientId"], p["present"]) for p in room["waiting"]] == [
        (CONSULTATION, PATIENT, True)
    ]
