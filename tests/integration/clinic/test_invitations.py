"""Invited providers: a token naming another provider's consultation only while an invitation stands.

``POST /api/telemedicine/invite`` by the consultation's provider; revoke-access by that provider
ends the invitation and revokes the invited provider's tokens for the consultation. Real SDK,
enforcing relay.
"""

from __future__ import annotations

from typing import Any

import pytest

from telehealth_client.security.clinic_client import ClinicClient, ClinicError
from telehealth_devstack.clinic import Clinic
from telehealth_devstack.relay import Relay
from telehealth_devstack.relay.client import sdk_client
from telehealth_devstack.relay.clock import ManualClock
from tests.support.clinic import (
    AUDITOR_CREDENTIAL,
    CART_CREDENTIALS,
    KIOSK_CREDENTIAL,
    PUBLISH_KEY,
    SECRET_KEY,
    SUBSCRIBE_KEY,
    ClientFactory,
    ClinicApi,
    ClinicFactory,
    publish,
)

pytestmark = pytest.mark.integration

CONSULTATION = "consultation.dr-lee.pat-1"
INVITE = {"consultationChannel": CONSULTATION, "invitedProviderId": "dr-okafor", "role": "specialist"}
OKAFOR_TOKEN = {
    "userId": "dr-okafor",
    "role": "provider",
    "departmentId": "er",
    "consultationChannel": CONSULTATION,
}
REVOKE_OKAFOR = {"userId": "dr-okafor", "consultationChannel": CONSULTATION}


async def invite(
    api: ClinicApi, body: dict[str, Any] = INVITE, credential: str = CART_CREDENTIALS["dr-lee"]
) -> Any:
    return await api.post("/api/telemedicine/invite", body, credential=credential)


async def okafor_token(api: ClinicApi) -> tuple[int, Any]:
    return await api.post("/api/telemedicine/token", OKAFOR_TOKEN, credential=CART_CREDENTIALS["dr-okafor"])


async def test_an_invited_provider_gets_a_token_only_while_the_invitation_stands(
    enforcing_relay: Relay, clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    api = http.at(clinic)
    # Not invited: refused, nothing granted.
    status, answer = await okafor_token(api)
    assert (status, answer["field"]) == (403, "consultationChannel")
    assert "invitation" in answer["reason"]
    assert clinic.ledger.live_tokens("dr-okafor", CONSULTATION) == []

    assert await invite(api) == (
        201,
        {
            "consultationChannel": CONSULTATION,
            "invitedProviderId": "dr-okafor",
            "role": "specialist",
            "invitedBy": "dr-lee",
        },
    )
    status, granted = await okafor_token(api)
    assert status == 200, granted
    specialist = make_client("dr-okafor", token=granted["token"])
    assert await publish(specialist, CONSULTATION) == 200
    assert await publish(specialist, f"{CONSULTATION}.video") == 200
    # Only that consultation of dr-lee's, not the others.
    assert await publish(specialist, "consultation.dr-lee.pat-2") == 403
    standing = await api.post(
        "/api/telemedicine/token",
        {"userId": "dr-okafor", "role": "provider", "departmentId": "er"},
        credential=CART_CREDENTIALS["dr-okafor"],
    )
    assert standing[0] == 200

    # Removed: its tokens for the consultation are revoked and no new one is issued.
    revoked = await api.post(
        "/api/telemedicine/revoke-access", REVOKE_OKAFOR, credential=CART_CREDENTIALS["dr-lee"]
    )
    assert revoked == (200, {"revoked": 1})
    assert await publish(specialist, CONSULTATION) == 403
    status, answer = await okafor_token(api)
    assert (status, answer["field"]) == (403, "consultationChannel")
    # Its standing token (no consultation named) is not touched.
    own = make_client("dr-okafor", token=standing[1]["token"])
    assert await publish(own, "waiting-room.dr-okafor") == 200


@pytest.mark.parametrize(
    ("credential", "field"),
    [
        (CART_CREDENTIALS["dr-okafor"], "consultationChannel"),  # a provider, not this consultation's
        (CART_CREDENTIALS["nurse-1"], "Authorization"),
        (KIOSK_CREDENTIAL, "Authorization"),
        (AUDITOR_CREDENTIAL, "Authorization"),
    ],
)
async def test_only_the_consultations_provider_may_invite(
    clinic: Clinic, http: ClinicApi, credential: str, field: str
) -> None:
    api = http.at(clinic)
    body = {**INVITE, "invitedProviderId": "dr-nowak"}
    status, answer = await invite(api, body, credential)
    assert (status, answer["field"]) == (403, field)
    # The refused invitation gave dr-nowak nothing.
    assert not await clinic.invitation_stands(CONSULTATION, "dr-nowak")


async def test_an_x_user_id_header_must_name_the_credentials_own_provider(
    clinic: Clinic, http: ClinicApi
) -> None:
    status, answer = await http.at(clinic).post(
        "/api/telemedicine/invite", INVITE, credential=CART_CREDENTIALS["dr-lee"], caller="dr-okafor"
    )
    assert (status, answer["field"]) == (403, "X-User-Id")
    assert not await clinic.invitation_stands(CONSULTATION, "dr-okafor")


@pytest.mark.parametrize(
    ("body", "field", "reason_part"),
    [
        ({**INVITE, "role": "boss"}, "role", "'specialist'"),
        ({**INVITE, "invitedProviderId": "dr.x"}, "invitedProviderId", "'.'"),
        ({**INVITE, "invitedProviderId": "dr-unknown"}, "invitedProviderId", "not a provider"),
        ({**INVITE, "invitedProviderId": "nurse-1"}, "invitedProviderId", "not a provider"),
        ({**INVITE, "invitedProviderId": "dr-lee"}, "invitedProviderId", "own provider"),
        ({**INVITE, "consultationChannel": "consultation.dr-lee"}, "consultationChannel", "consultation."),
        ({"invitedProviderId": "dr-okafor", "role": "observer"}, "consultationChannel", "is required"),
        ({"consultationChannel": CONSULTATION, "role": "observer"}, "invitedProviderId", "is required"),
        ({**INVITE, "role": None}, "role", ""),
    ],
)
async def test_a_bad_invitation_gets_400_naming_the_field_and_changes_nothing(
    clinic: Clinic, http: ClinicApi, body: dict[str, Any], field: str, reason_part: str
) -> None:
    status, answer = await invite(http.at(clinic), body)
    assert (status, answer["field"]) == (400, field)
    assert reason_part in answer["reason"]
    for provider in ("dr-okafor", "dr-unknown", "nurse-1", "dr-lee"):
        assert not await clinic.invitation_stands(CONSULTATION, provider)


async def test_an_invitation_survives_a_clinic_restart_and_its_revocation_too(
    enforcing_relay: Relay, make_clinic: ClinicFactory, http: ClinicApi
) -> None:
    first = await make_clinic(relay_origin=enforcing_relay.origin)
    assert (await invite(http.at(first)))[0] == 201
    await first.stop()

    second = await make_clinic(relay_origin=enforcing_relay.origin)  # the same state directory
    assert (await okafor_token(http.at(second)))[0] == 200
    revoked = await http.at(second).post(
        "/api/telemedicine/revoke-access", REVOKE_OKAFOR, credential=CART_CREDENTIALS["dr-lee"]
    )
    assert revoked == (200, {"revoked": 1})
    await second.stop()

    third = await make_clinic(relay_origin=enforcing_relay.origin)
    assert (await okafor_token(http.at(third)))[0] == 403


async def test_the_clinic_client_invites_and_the_invited_provider_asks_for_its_token(
    enforcing_relay: Relay, clinic: Clinic
) -> None:
    host = ClinicClient(clinic.url, CART_CREDENTIALS["dr-lee"])
    guest = ClinicClient(clinic.url, CART_CREDENTIALS["dr-okafor"])
    try:
        with pytest.raises(ClinicError) as refused:
            await guest.request_token(
                "dr-okafor", "provider", departmentId="er", consultationChannel=CONSULTATION
            )
        assert refused.value.status == 403
        assert "refused: consultationChannel:" in str(refused.value)

        invitation = await host.invite(CONSULTATION, "dr-okafor", "second-opinion")
        assert (invitation.consultation_channel, invitation.invited_provider_id) == (
            CONSULTATION,
            "dr-okafor",
        )
        assert (invitation.role, invitation.invited_by) == ("second-opinion", "dr-lee")

        grant = await guest.request_token(
            "dr-okafor", "provider", departmentId="er", consultationChannel=CONSULTATION
        )
        assert grant.ttl_minutes == 60
        assert grant.channel_config["consultationChannel"] == CONSULTATION
        assert await host.revoke_access("dr-okafor", CONSULTATION) == 1

        with pytest.raises(ClinicError) as not_host:
            await guest.invite(CONSULTATION, "dr-nowak", "observer")
        assert not_host.value.status == 403
    finally:
        await host.aclose()
        await guest.aclose()


async def test_no_log_record_holds_a_token_even_without_the_agents_log_setup(
    enforcing_relay: Relay, clinic: Clinic, http: ClinicApi, caplog: pytest.LogCaptureFixture
) -> None:
    # httpx logs every request URL at INFO, and a revoke's URL ends with the token itself. A
    # process that never calls logs.configure() (a test, an embedding) must not leak it either.
    caplog.set_level("DEBUG")
    api = http.at(clinic)
    assert (await invite(api))[0] == 201
    status, grant = await okafor_token(api)
    assert status == 200
    credential = CART_CREDENTIALS["dr-lee"]
    assert await api.post("/api/telemedicine/revoke-access", REVOKE_OKAFOR, credential=credential) == (
        200,
        {"revoked": 1},
    )
    assert caplog.records, "the capture saw nothing: the test would prove nothing"
    assert not [r.name for r in caplog.records if grant["token"] in r.getMessage()]


async def test_a_provider_invited_again_in_the_same_second_gets_a_token_that_works(
    make_clinic: ClinicFactory, http: ClinicApi
) -> None:
    # A removed specialist re-invited at once: identical grants in the same second would give a
    # byte-identical token, revoked before it was issued. Both clocks stand still to make sure.
    clock = ManualClock()
    relay = Relay(
        publish_key=PUBLISH_KEY,
        subscribe_key=SUBSCRIBE_KEY,
        secret_key=SECRET_KEY,
        enforce_access=True,
        clock=clock,
    )
    async with relay:
        api = http.at(await make_clinic(relay_origin=relay.origin, clock=clock))
        assert (await invite(api))[0] == 201
        status, first = await okafor_token(api)
        assert status == 200
        credential = CART_CREDENTIALS["dr-lee"]
        assert (await api.post("/api/telemedicine/revoke-access", REVOKE_OKAFOR, credential=credential))[
            0
        ] == 200
        assert (await invite(api))[0] == 201
        status, second = await okafor_token(api)
        assert status == 200
        assert second["token"] != first["token"]
        specialist = sdk_client(relay, user_id="dr-okafor", enable_subscribe=False, token=second["token"])
        try:
            assert await publish(specialist, CONSULTATION) == 200
        finally:
            await specialist.stop()
