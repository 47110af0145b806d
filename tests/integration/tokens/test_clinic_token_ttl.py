"""The clinic stand-in's per-role token TTL override, which the token tests need (1-minute tokens)."""

from __future__ import annotations

from typing import Any

import pytest

from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.clinic import Clinic
from telehealth_devstack.stack import DevStack
from tests.support.clinic import (
    CART_CREDENTIALS,
    DEVICE_CREDENTIALS,
    DIRECTORY,
    KIOSK_CREDENTIAL,
    ON_CALL,
    PUBLISH_KEY,
    SECRET_KEY,
    SUBSCRIBE_KEY,
    TURN_SECRET,
    TURN_URLS,
)
from tests.support.tokens import BusFactory, SharedClock


def parse(bus_factory: BusFactory, token: str) -> dict[str, Any]:
    # SDK 10.8's parse_token does not restore base64 padding.
    parsed: dict[str, Any] = bus_factory("inspector").pubnub.parse_token(token + "=" * (-len(token) % 4))
    return parsed


def token_ttl(bus_factory: BusFactory, token: str) -> int:
    return int(parse(bus_factory, token)["ttl"])


async def test_the_clinic_grants_the_ttl_set_for_a_role_and_the_default_for_others(
    clinic: Clinic, make_bus: BusFactory
) -> None:
    kiosk = ClinicClient(clinic.url, KIOSK_CREDENTIAL)
    cart = ClinicClient(clinic.url, CART_CREDENTIALS["dr-lee"])
    try:
        patient = await kiosk.request_token("patient-1", "patient", providerId="dr-lee")
        provider = await cart.request_token(
            "dr-lee",
            "provider",
            consultationChannel="consultation.dr-lee.patient-1",
            departmentId="cardiology",
        )
    finally:
        await kiosk.aclose()
        await cart.aclose()
    assert patient.ttl_minutes == 1
    assert token_ttl(make_bus, patient.token) == 1  # the token itself, not just the answer
    assert provider.ttl_minutes == 60
    assert token_ttl(make_bus, provider.token) == 60


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"doctor": 5}, r"token_ttl_minutes: 'doctor' is not a role \(patient, provider, nurse\)"),
        ({"patient": 0}, r"token_ttl_minutes\[patient\]: must be a whole number of minutes from 1 to 43200"),
        ({"nurse": 43_201}, r"token_ttl_minutes\[nurse\]: must be a whole number of minutes from 1 to 43200"),
        ({"nurse": 1.5}, r"token_ttl_minutes\[nurse\]: must be a whole number of minutes from 1 to 43200"),
        ({"nurse": True}, r"token_ttl_minutes\[nurse\]: must be a whole number of minutes from 1 to 43200"),
    ],
)
def test_a_bad_ttl_override_is_refused_naming_the_role(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Clinic(
            relay_origin="127.0.0.1:9",
            publish_key=PUBLISH_KEY,
            subscribe_key=SUBSCRIBE_KEY,
            secret_key=SECRET_KEY,
            device_credentials=DEVICE_CREDENTIALS,
            turn_secret=TURN_SECRET,
            turn_urls=TURN_URLS,
            on_call=ON_CALL,
            directory=DIRECTORY,
            token_ttl_minutes=override,
        )


async def test_the_devstack_passes_its_ttl_override_to_the_clinic() -> None:
    async with DevStack(token_ttl_minutes={"provider": 2}) as stack:
        assert stack.clinic is not None
        cart = ClinicClient(stack.clinic.url, stack.users["dr-demo"].credential)
        try:
            grant = await cart.request_token(
                "dr-demo", "provider", consultationChannel="consultation.dr-demo.p-1", departmentId="er"
            )
        finally:
            await cart.aclose()
    assert grant.ttl_minutes == 2


async def test_a_clinic_on_the_relays_manual_clock_still_grants_after_time_moved(
    clinic: Clinic, clock: SharedClock, make_bus: BusFactory
) -> None:
    # The clinic signs its grant requests with the time it is given; the relay refuses a signature
    # more than 60 s off its own clock. On one shared clock both agree however far a test moves it.
    kiosk = ClinicClient(clinic.url, KIOSK_CREDENTIAL)
    try:
        await clock.advance(300)
        grant = await kiosk.request_token("patient-1", "patient", providerId="dr-lee")
    finally:
        await kiosk.aclose()
    parsed: dict[str, Any] = make_bus("inspector").pubnub.parse_token(
        grant.token + "=" * (-len(grant.token) % 4)
    )
    assert parsed["timestamp"] == int(clock())
