"""The clinic stand-in against the real relay through the real SDK: revoke, consent, restarts.

What each role's token holds, channel by channel, is in ``test_role_grants.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pubnub.pubnub_asyncio import PubNubAsyncio

from telehealth_devstack.clinic import CONSENT_FIELD, Clinic
from telehealth_devstack.relay import Relay
from tests.support.clinic import (
    CART_CREDENTIALS,
    KIOSK_CREDENTIAL,
    ClientFactory,
    ClinicApi,
    ClinicFactory,
    credential_for,
    grant_consent,
    parse,
)

pytestmark = pytest.mark.integration


async def request_token(api: ClinicApi, **body: str) -> dict[str, Any]:
    """A token from the device that would ask: a staff member's own cart, else the patient kiosk.

    A patient's consent is recorded first: the token server refuses a patient token without it
    (``test_token_consent.py``).
    """
    if body["role"] == "patient":
        await grant_consent(api, body["userId"])
    status, answer = await api.post("/api/telemedicine/token", body, credential=credential_for(body))
    assert status == 200, answer
    return dict(answer)


async def test_patient_may_name_its_consultation_instead_of_the_provider(
    clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    by_channel = await request_token(
        http.at(clinic), userId="pat-1", role="patient", consultationChannel="consultation.dr-lee.pat-1"
    )
    by_provider = await request_token(http.at(clinic), userId="pat-1", role="patient", providerId="dr-lee")
    inspector = make_client("inspector")
    assert (
        parse(inspector, by_channel["token"])["resources"]
        == parse(inspector, by_provider["token"])["resources"]
    )


async def publish(client: PubNubAsyncio, channel: str) -> int:
    """The HTTP status of one publish: 200, or the relay's refusal."""
    # `future()` hands a refusal back as an envelope rather than raising it.
    envelope = await client.publish().channel(channel).message({"type": "probe"}).future()
    return int(envelope.status.status_code) if envelope.status.is_error() else 200


@pytest.fixture
async def enforcing_relay(clinic_relay: Relay) -> AsyncIterator[Relay]:
    clinic_relay.enforce_access = True
    yield clinic_relay
    clinic_relay.enforce_access = False


async def test_a_patient_token_works_only_where_granted(
    enforcing_relay: Relay, clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    answer = await request_token(http.at(clinic), userId="pat-1", role="patient", providerId="dr-lee")
    patient = make_client("pat-1", token=answer["token"])
    assert await publish(patient, "consultation.dr-lee.pat-1") == 200
    assert await publish(patient, "waiting-room.dr-lee") == 200
    assert await publish(patient, "consultation.dr-lee.pat-2") == 403
    assert await publish(patient, "notification.pat-1") == 403
    history = await patient.fetch_messages().channels(["waiting-room.dr-lee"]).future()
    assert (history.status.is_error(), history.status.status_code) == (True, 403)
    # The token is bound to pat-1: another user ID presenting it is refused.
    impostor = make_client("pat-2", token=answer["token"])
    assert await publish(impostor, "consultation.dr-lee.pat-1") == 403


async def test_revoke_access_revokes_every_token_for_that_consultation_only(
    enforcing_relay: Relay, clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    api = http.at(clinic)
    first = await request_token(api, userId="pat-1", role="patient", providerId="dr-lee")
    second = await request_token(api, userId="pat-1", role="patient", providerId="dr-lee")
    elsewhere = await request_token(api, userId="pat-1", role="patient", providerId="dr-okafor")
    other_patient = await request_token(api, userId="pat-2", role="patient", providerId="dr-lee")

    tokens = [first, second, elsewhere, other_patient]
    clients = [
        make_client(uid, token=t["token"])
        for uid, t in zip(["pat-1", "pat-1", "pat-1", "pat-2"], tokens, strict=True)
    ]
    channels = [
        "consultation.dr-lee.pat-1",
        "consultation.dr-lee.pat-1",
        "consultation.dr-okafor.pat-1",
        "consultation.dr-lee.pat-2",
    ]
    assert [await publish(c, ch) for c, ch in zip(clients, channels, strict=True)] == [200, 200, 200, 200]

    answer = await api.post(
        "/api/telemedicine/revoke-access",
        {"userId": "pat-1", "consultationChannel": "consultation.dr-lee.pat-1"},
        credential=CART_CREDENTIALS["dr-lee"],
    )
    assert answer == (200, {"revoked": 2})
    assert [await publish(c, ch) for c, ch in zip(clients, channels, strict=True)] == [403, 403, 200, 200]
    assert clinic.ledger.live_tokens("pat-1", "consultation.dr-lee.pat-1") == []

    # Revoking again has nothing left to revoke, and says so.
    answer = await api.post(
        "/api/telemedicine/revoke-access",
        {"userId": "pat-1", "consultationChannel": "consultation.dr-lee.pat-1"},
        credential=CART_CREDENTIALS["dr-lee"],
    )
    assert answer == (200, {"revoked": 0})


@pytest.mark.parametrize(
    ("credential", "caller", "field"),
    [
        # Another provider's cart, even one that holds a provider token of its own.
        (CART_CREDENTIALS["dr-okafor"], None, "consultationChannel"),
        (CART_CREDENTIALS["dr-okafor"], "dr-lee", "X-User-Id"),
        # The patient kiosk claiming to be the consultation's provider.
        (KIOSK_CREDENTIAL, "dr-lee", "X-User-Id"),
        (KIOSK_CREDENTIAL, None, "Authorization"),
        (CART_CREDENTIALS["nurse-1"], None, "Authorization"),
    ],
)
async def test_only_the_consultations_provider_can_revoke_access(
    enforcing_relay: Relay,
    clinic: Clinic,
    http: ClinicApi,
    make_client: ClientFactory,
    credential: str,
    caller: str | None,
    field: str,
) -> None:
    api = http.at(clinic)
    await request_token(
        api,
        userId="dr-okafor",
        role="provider",
        consultationChannel="consultation.dr-okafor.pat-9",
        departmentId="er",
    )
    patient = await request_token(api, userId="pat-1", role="patient", providerId="dr-lee")
    status, answer = await api.post(
        "/api/telemedicine/revoke-access",
        {"userId": "pat-1", "consultationChannel": "consultation.dr-lee.pat-1"},
        credential=credential,
        caller=caller,
    )
    assert (status, answer["field"]) == (403, field)
    assert await publish(make_client("pat-1", token=patient["token"]), "consultation.dr-lee.pat-1") == 200
    assert len(clinic.ledger.live_tokens("pat-1", "consultation.dr-lee.pat-1")) == 1


async def test_a_kiosk_mints_any_patients_token_but_no_staff_token(
    enforcing_relay: Relay, clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    api = http.at(clinic)
    for patient_id in ("pat-1", "pat-2"):
        answer = await request_token(api, userId=patient_id, role="patient", providerId="dr-lee")
        assert parse(make_client("inspector"), answer["token"])["authorized_uuid"] == patient_id

    for role, user_id in (("provider", "dr-lee"), ("nurse", "nurse-1")):
        body = {
            "userId": user_id,
            "role": role,
            "consultationChannel": "consultation.dr-lee.pat-1",
            "departmentId": "cardiology",
        }
        status, answer = await api.post("/api/telemedicine/token", body, credential=KIOSK_CREDENTIAL)
        assert (status, answer["field"]) == (403, "role")
        assert "token" not in answer
        assert clinic.ledger.live_tokens(user_id, "consultation.dr-lee.pat-1") == []


async def test_a_providers_cart_mints_only_its_own_provider_tokens(
    enforcing_relay: Relay, clinic: Clinic, http: ClinicApi
) -> None:
    api = http.at(clinic)
    cart = CART_CREDENTIALS["dr-lee"]
    own = {"userId": "dr-lee", "role": "provider", "consultationChannel": "consultation.dr-lee.pat-1"}
    status, _ = await api.post(
        "/api/telemedicine/token", {**own, "departmentId": "cardiology"}, credential=cart
    )
    assert status == 200
    # Its own consultation, but another department's queue: refused, nothing granted.
    status, answer = await api.post("/api/telemedicine/token", {**own, "departmentId": "er"}, credential=cart)
    assert (status, answer["field"]) == (403, "departmentId")
    assert len(clinic.ledger.live_tokens("dr-lee", "consultation.dr-lee.pat-1")) == 1
    other = {
        "userId": "dr-okafor",
        "role": "provider",
        "consultationChannel": "consultation.dr-okafor.pat-1",
        "departmentId": "er",
    }
    status, answer = await api.post("/api/telemedicine/token", other, credential=cart)
    assert (status, answer["field"]) == (403, "userId")
    patient = {"userId": "pat-1", "role": "patient", "providerId": "dr-lee"}
    status, answer = await api.post("/api/telemedicine/token", patient, credential=cart)
    assert (status, answer["field"]) == (403, "role")
    assert clinic.ledger.live_tokens("dr-okafor", "consultation.dr-okafor.pat-1") == []
    assert clinic.ledger.live_tokens("pat-1", "consultation.dr-lee.pat-1") == []


async def test_consent_is_written_to_app_context(
    clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    server = make_client("reader", with_secret_key=True)
    await server.set_uuid_metadata(uuid="pat-1", custom={"preferredLanguage": "es"}).future()

    status, answer = await http.at(clinic).post(
        "/api/telemedicine/consent",
        {"patientId": "pat-1", "granted": True, "expiresAt": "2027-01-31T23:59:59.5+00:00"},
    )
    assert status == 200
    expected = {"granted": True, "expiresAt": "2027-01-31T23:59:59.500Z"}
    assert answer == {"patientId": "pat-1", "consent": expected}

    stored = (await server.get_uuid_metadata(uuid="pat-1", include_custom=True).future()).result.data
    assert json.loads(stored["custom"][CONSENT_FIELD]) == expected
    assert stored["custom"]["preferredLanguage"] == "es"

    await http.at(clinic).post(
        "/api/telemedicine/consent", {"patientId": "pat-1", "granted": False, "expiresAt": None}
    )
    stored = (await server.get_uuid_metadata(uuid="pat-1", include_custom=True).future()).result.data
    assert json.loads(stored["custom"][CONSENT_FIELD]) == {"granted": False, "expiresAt": None}
    assert await clinic.consent("pat-1") == {"granted": False, "expiresAt": None}


async def test_consent_for_a_patient_without_metadata_creates_it(
    clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    status, _ = await http.at(clinic).post(
        "/api/telemedicine/consent", {"patientId": "pat-new", "granted": True, "expiresAt": None}
    )
    assert status == 200
    reader = make_client("reader", with_secret_key=True)
    stored = (await reader.get_uuid_metadata(uuid="pat-new", include_custom=True).future()).result.data
    assert json.loads(stored["custom"][CONSENT_FIELD]) == {"granted": True, "expiresAt": None}


REVOKE_PAT_1 = {"userId": "pat-1", "consultationChannel": "consultation.dr-lee.pat-1"}


async def test_revoke_after_a_clinic_restart_revokes_what_was_issued_before(
    enforcing_relay: Relay, make_clinic: ClinicFactory, http: ClinicApi, make_client: ClientFactory
) -> None:
    first = await make_clinic(relay_origin=enforcing_relay.origin)
    before_restart = await request_token(http.at(first), userId="pat-1", role="patient", providerId="dr-lee")
    await first.stop()

    second = await make_clinic(relay_origin=enforcing_relay.origin)  # the same state directory
    patient = make_client("pat-1", token=before_restart["token"])
    assert await publish(patient, "consultation.dr-lee.pat-1") == 200
    answer = await http.at(second).post(
        "/api/telemedicine/revoke-access", REVOKE_PAT_1, credential=CART_CREDENTIALS["dr-lee"]
    )
    assert answer == (200, {"revoked": 1})
    assert await publish(patient, "consultation.dr-lee.pat-1") == 403


async def test_a_token_revoked_before_a_clinic_restart_stays_revoked_and_is_not_revoked_twice(
    enforcing_relay: Relay, make_clinic: ClinicFactory, http: ClinicApi, make_client: ClientFactory
) -> None:
    first = await make_clinic(relay_origin=enforcing_relay.origin)
    token = (await request_token(http.at(first), userId="pat-1", role="patient", providerId="dr-lee"))[
        "token"
    ]
    revoke = {"credential": CART_CREDENTIALS["dr-lee"]}
    assert await http.at(first).post("/api/telemedicine/revoke-access", REVOKE_PAT_1, **revoke) == (
        200,
        {"revoked": 1},
    )
    await first.stop()

    second = await make_clinic(relay_origin=enforcing_relay.origin)
    assert await publish(make_client("pat-1", token=token), "consultation.dr-lee.pat-1") == 403
    assert second.ledger.live_tokens("pat-1", "consultation.dr-lee.pat-1") == []
    assert await http.at(second).post("/api/telemedicine/revoke-access", REVOKE_PAT_1, **revoke) == (
        200,
        {"revoked": 0},
    )


async def test_consent_survives_a_clinic_restart(
    clinic_relay: Relay, make_clinic: ClinicFactory, http: ClinicApi
) -> None:
    first = await make_clinic(relay_origin=clinic_relay.origin)
    body = {"patientId": "pat-1", "granted": True, "expiresAt": "2027-01-31T23:59:59Z"}
    assert (await http.at(first).post("/api/telemedicine/consent", body))[0] == 200
    await first.stop()

    second = await make_clinic(relay_origin=clinic_relay.origin)
    assert await second.consent("pat-1") == {"granted": True, "expiresAt": "2027-01-31T23:59:59.000Z"}
    assert await second.consent("pat-2") is None


async def test_a_clinic_without_a_state_directory_forgets_on_restart(
    enforcing_relay: Relay, make_clinic: ClinicFactory, http: ClinicApi
) -> None:
    first = await make_clinic(relay_origin=enforcing_relay.origin, state_dir=None)
    await request_token(http.at(first), userId="pat-1", role="patient", providerId="dr-lee")
    await first.stop()
    second = await make_clinic(relay_origin=enforcing_relay.origin, state_dir=None)
    assert second.ledger.live_tokens("pat-1", "consultation.dr-lee.pat-1") == []
