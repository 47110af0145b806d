"""Fixtures that start the real development parts: coturn, the relay and the clinic stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pubnub.pubnub_asyncio import PubNubAsyncio

from telehealth_devstack.clinic import CALLER_HEADER, Clinic, DeviceIdentity, StaffMember
from telehealth_devstack.relay import Relay
from telehealth_devstack.relay.client import sdk_client
from telehealth_devstack.turn import TurnServer

PUBLISH_KEY = "pub-c-clinic-test"
SUBSCRIBE_KEY = "sub-c-clinic-test"
SECRET_KEY = "sec-c-clinic-test"
# Each check-in kiosk's credential is bound to its device ID: patient tokens for patients, and TURN
# credentials and audit events for patients and that device.
KIOSK_ID = "kiosk-1"
KIOSK_CREDENTIAL = "kiosk-device-credential-for-tests"
OTHER_KIOSK_ID = "kiosk-2"
OTHER_KIOSK_CREDENTIAL = "kiosk-2-device-credential-for-tests"
# Each provider's and nurse's cart: tokens for that one user in that one role.
CART_CREDENTIALS = {
    "dr-lee": "dr-lee-cart-credential-for-tests",
    "dr-okafor": "dr-okafor-cart-credential-for-tests",
    "nurse-1": "nurse-1-cart-credential-for-tests",
}
AUDITOR_CREDENTIAL = "auditor-credential-for-tests"  # reads the audit sink, nothing else
DEVICE_CREDENTIALS = {
    KIOSK_CREDENTIAL: DeviceIdentity.patient_kiosk(KIOSK_ID),
    OTHER_KIOSK_CREDENTIAL: DeviceIdentity.patient_kiosk(OTHER_KIOSK_ID),
    AUDITOR_CREDENTIAL: DeviceIdentity("auditor", "auditor-1"),
    CART_CREDENTIALS["dr-lee"]: DeviceIdentity("provider", "dr-lee"),
    CART_CREDENTIALS["dr-okafor"]: DeviceIdentity("provider", "dr-okafor"),
    CART_CREDENTIALS["nurse-1"]: DeviceIdentity("nurse", "nurse-1"),
}
TURN_SECRET = "turn-secret-for-tests"
TURN_URLS = ["turn:127.0.0.1:3478?transport=udp"]
ON_CALL = {"cardiology": ["dr-lee", "dr-okafor"], "er": ["dr-nowak"]}
# Who belongs to which department: what a token request is checked against.
DIRECTORY = {
    "dr-lee": StaffMember("provider", "cardiology"),
    "dr-okafor": StaffMember("provider", "er"),
    "dr-nowak": StaffMember("provider", "er"),
    "nurse-1": StaffMember("nurse", "cardiology"),
}
# The one organization the clinic serves: it names the audit channel in every token.
ORGANIZATION = "org-test"
# Nothing listens here: a clinic pointed at it sees PubNub as down.
UNREACHABLE_ORIGIN = "127.0.0.1:9"

ClinicFactory = Callable[..., Awaitable[Clinic]]
ClientFactory = Callable[..., PubNubAsyncio]


@pytest.fixture
async def turn_server() -> AsyncIterator[TurnServer]:
    async with TurnServer() as server:
        yield server


@pytest.fixture
async def clinic_relay() -> AsyncIterator[Relay]:
    """The development relay, Access Manager not enforced (the clinic mints tokens on it)."""
    async with Relay(publish_key=PUBLISH_KEY, subscribe_key=SUBSCRIBE_KEY, secret_key=SECRET_KEY) as relay:
        yield relay


@pytest.fixture
async def make_clinic(tmp_path: Path) -> AsyncIterator[ClinicFactory]:
    """Starts clinics (default: PubNub unreachable, state in tmp_path/"clinic"); all stopped afterwards."""
    started: list[Clinic] = []

    async def make(**overrides: Any) -> Clinic:
        settings: dict[str, Any] = {
            "relay_origin": UNREACHABLE_ORIGIN,
            "publish_key": PUBLISH_KEY,
            "subscribe_key": SUBSCRIBE_KEY,
            "secret_key": SECRET_KEY,
            "device_credentials": DEVICE_CREDENTIALS,
            "turn_secret": TURN_SECRET,
            "turn_urls": TURN_URLS,
            "on_call": ON_CALL,
            "state_dir": tmp_path / "clinic",
            "directory": DIRECTORY,
            "organization_id": ORGANIZATION,
        }
        settings.update(overrides)
        clinic = Clinic(**settings)
        await clinic.start()
        started.append(clinic)
        return clinic

    yield make
    await asyncio.gather(*(clinic.stop() for clinic in started))


@pytest.fixture
async def enforcing_relay(clinic_relay: Relay) -> AsyncIterator[Relay]:
    """``clinic_relay`` with Access Manager enforced: a token's power is what the test sees."""
    clinic_relay.enforce_access = True
    yield clinic_relay
    clinic_relay.enforce_access = False


@pytest.fixture
async def make_client(clinic_relay: Relay) -> AsyncIterator[ClientFactory]:
    """Real PubNub SDK clients on the relay (no subscribe loop); all stopped afterwards."""
    clients: list[PubNubAsyncio] = []

    def make(user_id: str, **options: Any) -> PubNubAsyncio:
        client = sdk_client(clinic_relay, user_id=user_id, enable_subscribe=False, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.stop()


async def publish(client: PubNubAsyncio, channel: str) -> int:
    """The status of publishing a probe on ``channel`` (200, or the refusal's)."""
    envelope = await client.publish().channel(channel).message({"type": "probe"}).future()
    return int(envelope.status.status_code) if envelope.status.is_error() else 200


async def read_history(client: PubNubAsyncio, channel: str) -> int:
    """The status of reading ``channel``'s history (200, or the refusal's)."""
    envelope = await client.fetch_messages().channels([channel]).future()
    return int(envelope.status.status_code) if envelope.status.is_error() else 200


@pytest.fixture
async def clinic(make_clinic: ClinicFactory, clinic_relay: Relay) -> Clinic:
    """The clinic stand-in minting tokens on a running relay."""
    return await make_clinic(relay_origin=clinic_relay.origin)


@pytest.fixture
async def offline_clinic(make_clinic: ClinicFactory) -> Clinic:
    """A clinic whose PubNub is down: for everything that must not need PubNub."""
    return await make_clinic()


class ClinicApi:
    """A thin HTTP client that answers (status, JSON body or None)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self.base_url = ""
        self.last_headers: dict[str, str] = {}  # the headers of the last answer

    def at(self, clinic: Clinic) -> ClinicApi:
        self.base_url = clinic.url
        return self

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        credential: str | None = KIOSK_CREDENTIAL,
        caller: str | None = None,
        raw: bytes | None = None,
        scheme: str = "Bearer",
    ) -> tuple[int, Any]:
        headers: dict[str, str] = {}
        if credential is not None:
            headers["Authorization"] = f"{scheme} {credential}"
        if caller is not None:
            headers[CALLER_HEADER] = caller
        kwargs: dict[str, Any] = {"headers": headers}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["json"] = body
        async with self._session.request(method, self.base_url + path, **kwargs) as response:
            self.last_headers = dict(response.headers)
            text = await response.text()
            return response.status, (await response.json() if text else None)

    async def post(self, path: str, body: Any = None, **options: Any) -> tuple[int, Any]:
        """POST with the kiosk's credential unless ``credential=`` says otherwise."""
        return await self.call("POST", path, body, **options)

    async def get(self, path: str, **options: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **options)


@pytest.fixture
async def http() -> AsyncIterator[ClinicApi]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield ClinicApi(session)


def credential_for(body: dict[str, Any]) -> str:
    """The device credential a token request comes from: a staff member's own cart, else the kiosk."""
    if body.get("role") in ("provider", "nurse") and body.get("userId") in CART_CREDENTIALS:
        return CART_CREDENTIALS[body["userId"]]
    return KIOSK_CREDENTIAL


async def grant_consent(api: ClinicApi, patient_id: str, expires_at: str | None = None) -> None:
    """The kiosk records the patient's granted telehealth consent (the token server needs it)."""
    body = {"patientId": patient_id, "granted": True, "expiresAt": expires_at}
    status, answer = await api.post("/api/telemedicine/consent", body, credential=KIOSK_CREDENTIAL)
    assert status == 200, answer
