"""The clinic's refusals through a real agent's API: 422 naming the field the clinic named, with its
reason (never 503, which says "the clinic did not answer, try again"), and nothing changed."""

from __future__ import annotations

import pytest

from telehealth_devstack.stack import DevStack
from tests.support.api import CHECK_IN, CONSULTATION, RunningAgent, consultation_joined, record_consent

pytestmark = pytest.mark.integration

NOBODY = "dr-nobody"


def refused_field(answer: dict[str, object]) -> dict[str, str]:
    assert answer["error"] == "invalid-body", answer
    fields = answer["fields"]
    assert isinstance(fields, list) and len(fields) == 1, answer
    return dict(fields[0])


async def test_a_check_in_with_a_provider_the_clinic_refuses_is_422_naming_it(
    kiosk: RunningAgent, stack: DevStack
) -> None:
    await record_consent(stack)
    status, answer = await kiosk.api.post("/v1/check-in", {**CHECK_IN, "providerId": NOBODY})
    assert status == 422, answer
    problem = refused_field(answer)
    assert problem["field"] == "providerId" and problem["reason"], answer
    status, state = await kiosk.api.get("/v1/status")
    assert (status, state["status"], state["consultations"]) == (200, "idle", [])


async def test_inviting_a_provider_the_clinic_refuses_is_422_naming_it(
    kiosk: RunningAgent, provider: RunningAgent, stack: DevStack
) -> None:
    await consultation_joined(kiosk, provider, stack)
    status, answer = await provider.api.post(
        f"/v1/consultations/{CONSULTATION}/invite", {"providerId": NOBODY, "role": "specialist"}
    )
    assert status == 422, answer
    problem = refused_field(answer)
    assert problem["field"] == "providerId" and problem["reason"], answer
