"""DevStack's device credentials: one for the patient kiosk, one per provider and nurse."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.clinic import DeviceIdentity
from telehealth_devstack.stack import DEFAULT_DEPARTMENT, DEFAULT_KIOSK, DevStack, DevStackKeys

pytestmark = pytest.mark.integration


def test_each_provider_and_nurse_gets_its_own_credential() -> None:
    stack = DevStack(providers=("dr-a", "dr-b"), nurses=("nurse-x",))
    credentials = stack.device_credentials()
    assert credentials[stack.kiosk_credential()] == DeviceIdentity.patient_kiosk(DEFAULT_KIOSK)
    assert credentials[stack.keys.auditor_credential] == DeviceIdentity("auditor", "dev-auditor")
    assert {user_id: credentials[user.credential] for user_id, user in stack.users.items()} == {
        "dr-a": DeviceIdentity("provider", "dr-a"),
        "dr-b": DeviceIdentity("provider", "dr-b"),
        "nurse-x": DeviceIdentity("nurse", "nurse-x"),
    }
    assert len(set(credentials)) == 5
    assert set(DevStack().users) == {"dr-demo"}


def test_each_kiosk_gets_its_own_credential_bound_to_its_device_id() -> None:
    stack = DevStack(providers=("dr-a",), kiosks=("kiosk-a", "kiosk-b"))
    credentials = stack.device_credentials()
    assert stack.kiosk_credential() == stack.kiosk_credential("kiosk-a") == stack.kiosks["kiosk-a"]
    assert credentials[stack.kiosk_credential("kiosk-a")] == DeviceIdentity.patient_kiosk("kiosk-a")
    assert credentials[stack.kiosk_credential("kiosk-b")] == DeviceIdentity.patient_kiosk("kiosk-b")
    assert stack.kiosk_credential("kiosk-a") != stack.kiosk_credential("kiosk-b")
    with pytest.raises(ValueError, match="no kiosk 'kiosk-c'"):
        stack.kiosk_credential("kiosk-c")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"providers": ("dr-a", "dr-a")}, ValueError),
        ({"providers": ("dr-a",), "nurses": ("dr-a",)}, ValueError),
        ({"providers": ("dr.a",)}, ValueError),
        ({"nurses": "nurse-x"}, TypeError),
        ({"kiosks": "kiosk-1"}, TypeError),
        ({"kiosks": ()}, ValueError),
        ({"kiosks": ("kiosk.1",)}, ValueError),
        ({"providers": ("dr-a",), "kiosks": ("dr-a",)}, ValueError),
        ({"kiosks": ("kiosk-1", "kiosk-1")}, ValueError),
        ({"providers": ("dr-a",), "departments": {"dr-a": "card.iology"}}, ValueError),
        ({"providers": ("dr-a",), "departments": {"dr-b": "cardiology"}}, ValueError),
    ],
)
def test_bad_staff_lists_are_refused_at_construction(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        DevStack(**options)


async def test_the_organization_names_the_audit_channel_of_every_token() -> None:
    async with DevStack(providers=("dr-a",), organization_id="org-north") as stack:
        assert stack.clinic is not None
        environment = stack.agent_environment("dr-a")
        assert environment["TELEHEALTH_ORGANIZATION_ID"] == "org-north"
        client = ClinicClient(stack.clinic.url, environment["TELEHEALTH_DEVICE_CREDENTIAL"])
        try:
            department = environment["TELEHEALTH_DEPARTMENT_ID"]
            grant = await client.request_token("dr-a", "provider", departmentId=department)
        finally:
            await client.aclose()
    assert grant.channel_config["auditChannel"] == "audit.org-north"


def test_a_bad_organization_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="organization_id may contain only"):
        DevStack(organization_id="org.north")


async def test_agent_environment_per_user_and_what_each_credential_may_do() -> None:
    async with DevStack(providers=("dr-a", "dr-b")) as stack:
        assert stack.clinic is not None
        kiosk = stack.agent_environment()
        provider = stack.agent_environment("dr-a")
        assert kiosk["TELEHEALTH_DEVICE_CREDENTIAL"] == stack.kiosk_credential(DEFAULT_KIOSK)
        assert kiosk["TELEHEALTH_ORGANIZATION_ID"] == stack.organization_id == "org-dev"
        # The kiosk's device ID: the user ID it works under when idle (preflight, device checks).
        assert kiosk["TELEHEALTH_USER_ID"] == DEFAULT_KIOSK
        assert stack.agent_environment(DEFAULT_KIOSK) == kiosk
        assert provider == {
            **kiosk,
            "TELEHEALTH_USER_ID": "dr-a",
            "TELEHEALTH_ROLE": "provider",
            "TELEHEALTH_DEVICE_CREDENTIAL": stack.users["dr-a"].credential,
            "TELEHEALTH_DEPARTMENT_ID": "er",
            # Each agent's own local API token.
            "TELEHEALTH_API_TOKEN": stack.keys.api_token("dr-a"),
        }
        assert (
            kiosk["TELEHEALTH_API_TOKEN"]
            == stack.keys.api_token(DEFAULT_KIOSK)
            != provider["TELEHEALTH_API_TOKEN"]
        )
        with pytest.raises(ValueError, match="dr-z"):
            stack.agent_environment("dr-z")

        url = stack.clinic.url
        consultation = "consultation.dr-a.pat-1"

        async def post(environment: dict[str, str], path: str, body: dict[str, Any]) -> int:
            headers = {"Authorization": f"Bearer {environment['TELEHEALTH_DEVICE_CREDENTIAL']}"}
            async with (
                aiohttp.ClientSession(headers=headers) as session,
                session.post(url + path, json=body) as answer,
            ):
                return answer.status

        token = "/api/telemedicine/token"
        as_dr_a = {
            "userId": "dr-a",
            "role": "provider",
            "consultationChannel": consultation,
            "departmentId": "er",
        }
        patient = {"userId": "pat-1", "role": "patient", "providerId": "dr-a"}
        consent = {"patientId": "pat-1", "granted": True, "expiresAt": None}
        assert await post(kiosk, "/api/telemedicine/consent", consent) == 200
        assert await post(provider, token, as_dr_a) == 200
        assert await post(kiosk, token, as_dr_a) == 403
        assert await post(stack.agent_environment("dr-b"), token, as_dr_a) == 403
        assert await post(kiosk, token, patient) == 200
        assert await post(provider, token, patient) == 403

        revoke = "/api/telemedicine/revoke-access"
        body = {"userId": "pat-1", "consultationChannel": consultation}
        assert await post(kiosk, revoke, body) == 403
        assert await post(stack.agent_environment("dr-b"), revoke, body) == 403
        assert await post(provider, revoke, body) == 200


def test_staff_belong_to_the_default_department_unless_told() -> None:
    stack = DevStack(providers=("dr-a", "dr-b"), nurses=("nurse-x",), departments={"dr-b": "cardiology"})
    assert {user_id: user.department_id for user_id, user in stack.users.items()} == {
        "dr-a": DEFAULT_DEPARTMENT,
        "dr-b": "cardiology",
        "nurse-x": DEFAULT_DEPARTMENT,
    }


async def test_the_stacks_directory_decides_departments_and_the_auditor_reads_the_sink() -> None:
    async with DevStack(
        providers=("dr-a", "dr-b"), nurses=("nurse-x",), departments={"dr-b": "cardiology"}
    ) as stack:
        assert stack.clinic is not None
        url = stack.clinic.url

        async def call(method: str, credential: str, path: str, body: dict[str, Any] | None = None) -> int:
            headers = {"Authorization": f"Bearer {credential}"}
            async with (
                aiohttp.ClientSession(headers=headers) as session,
                session.request(method, url + path, json=body) as answer,
            ):
                return answer.status

        def nurse_request(consultation: str) -> dict[str, Any]:
            return {
                "userId": "nurse-x",
                "role": "nurse",
                "consultationChannel": consultation,
                "departmentId": "er",
            }

        nurse = stack.users["nurse-x"].credential
        token = "/api/telemedicine/token"
        assign = {"consultationChannel": "consultation.dr-a.pat-1", "nurseId": "nurse-x"}
        assert await call("POST", stack.users["dr-a"].credential, "/api/telemedicine/assign", assign) == 201
        assert await call("POST", nurse, token, nurse_request("consultation.dr-a.pat-1")) == 200
        assert await call("POST", nurse, token, nurse_request("consultation.dr-b.pat-1")) == 403
        as_dr_b = {**nurse_request("consultation.dr-b.pat-1"), "userId": "dr-b", "role": "provider"}
        assert await call("POST", stack.users["dr-b"].credential, token, as_dr_b) == 403
        assert await call("GET", stack.kiosk_credential(), "/api/audit-events") == 403
        assert await call("GET", stack.keys.auditor_credential, "/api/audit-events") == 200


def test_a_kept_keyset_is_read_back_with_the_same_staff_credentials(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    created = DevStackKeys.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert DevStackKeys.load_or_create(path) == created
    first = DevStack(keys=created, state_dir=tmp_path, providers=("dr-a",))
    again = DevStack(keys=DevStackKeys.load_or_create(path), state_dir=tmp_path, providers=("dr-a",))
    assert first.users["dr-a"].credential == again.users["dr-a"].credential
    assert created.staff_credential("provider", "dr-a") != created.staff_credential("nurse", "dr-a")
    assert DevStackKeys().staff_credential("provider", "dr-a") != created.staff_credential("provider", "dr-a")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff", "is not UTF-8"),
        (b"{", "is not JSON"),
        (b"[]", "must hold a JSON object"),
        (b'{"publish_key": ""}', "publish_key: must be a non-empty string"),
    ],
)
def test_a_bad_keyset_file_is_refused_naming_it(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "keys.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"{path}: {message}"):
        DevStackKeys.load_or_create(path)


def test_a_state_dir_without_its_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="state_dir needs the keys"):
        DevStack(state_dir=tmp_path)


async def test_every_provider_is_on_call_for_its_department_unless_a_roster_is_given() -> None:
    departments = {"dr-a": "er", "dr-b": "cardio", "nurse-x": "er"}
    async with DevStack(providers=("dr-a", "dr-b"), nurses=("nurse-x",), departments=departments) as stack:
        assert stack.clinic is not None
        credential = stack.users["dr-a"].credential
        headers = {"Authorization": f"Bearer {credential}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            for department, expected in (("er", ["dr-a"]), ("cardio", ["dr-b"]), ("icu", [])):
                async with http.get(f"{stack.clinic.url}/api/on-call/{department}") as answer:
                    assert answer.status == 200
                    assert [p["id"] for p in (await answer.json())["providers"]] == expected
    async with DevStack(providers=("dr-a",), on_call={"er": []}) as stack:
        assert stack.clinic is not None
        headers = {"Authorization": f"Bearer {stack.users['dr-a'].credential}"}
        async with (
            aiohttp.ClientSession(headers=headers) as http,
            http.get(f"{stack.clinic.url}/api/on-call/er") as answer,
        ):
            assert (await answer.json())["providers"] == []
