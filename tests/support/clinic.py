"""The clinic stand-in's tests' helpers: publishing and reading history with the real SDK, the clinic's
HTTP API as a client sees it, device credentials and recorded consent."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from pubnub.pubnub_asyncio import PubNubAsyncio

from telehealth_devstack.clinic import CALLER_HEADER, Clinic, DeviceIdentity, StaffMember

PUBLISH_KEY = "pub-c-clinic-test"


SUBSCRIBE_KEY = "sub-c-clinic-test"


SECRET_KEY = "sec-c-clinic-test"


KIOSK_ID = "kiosk-1"


KIOSK_CREDENTIAL = "kiosk-device-credential-for-tests"


OTHER_KIOSK_ID = "kiosk-2"


OTHER_KIOSK_CREDENTIAL = "kiosk-2-device-credential-for-tests"


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


DIRECTORY = {
    "dr-lee": StaffMember("provider", "cardiology"),
    "dr-okafor": StaffMember("provider", "er"),
    "dr-nowak": StaffMember("provider", "er"),
    "nurse-1": StaffMember("nurse", "cardiology"),
}


ORGANIZATION = "org-test"


UNREACHABLE_ORIGIN = "127.0.0.1:9"


ClinicFactory = Callable[..., Awaitable[Clinic]]


ClientFactory = Callable[..., PubNubAsyncio]


async def publish(client: PubNubAsyncio, channel: str) -> int:
    """The status of publishing a probe on ``channel`` (200, or the refusal's)."""
    envelope = await client.publish().channel(channel).message({"type": "probe"}).future()
    return int(envelope.status.status_code) if envelope.status.is_error() else 200


async def read_history(client: PubNubAsyncio, channel: str) -> int:
    """The status of reading ``channel``'s history (200, or the refusal's)."""
    envelope = await client.fetch_messages().channels([channel]).future()
    return int(envelope.status.status_code) if envelope.status.is_error() else 200


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


def credential_for(body: dict[str, Any]) -> str:
    """The device credential a token request comes from: a staff member's own cart, else the kiosk."""
    if body.get("role") in ("provider", "nurse") and body.get("userId") in CART_CREDENTIALS:
        return CART_CREDENTIALS[body["userId"]]
    return KIOSK_CREDENTIAL


async def record_consent(
    api: ClinicApi, patient_id: str, *, granted: bool, expires_at: str | None = None
) -> None:
    """The kiosk records the patient's telehealth consent, given or withdrawn (the token server
    reads it)."""
    body = {"patientId": patient_id, "granted": granted, "expiresAt": expires_at}
    status, answer = await api.post("/api/telemedicine/consent", body, credential=KIOSK_CREDENTIAL)
    assert status == 200, answer


async def grant_consent(api: ClinicApi, patient_id: str, expires_at: str | None = None) -> None:
    """The kiosk records the patient's granted telehealth consent (the token server needs it)."""
    await record_consent(api, patient_id, granted=True, expires_at=expires_at)


def audit_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "timestamp": "2026-11-22T14:03:07.123Z",
        "eventType": "CONSULTATION_SESSION_START",
        "severity": "info",
        "organizationId": ORGANIZATION,  # the one organization the clinic serves
        "actor": {"userId": "pat-1", "role": "patient", "ipAddress": "10.0.0.7"},
        "resource": {
            "type": "consultation",
            "id": "consultation.dr-lee.pat-1",
            "channel": "consultation.dr-lee.pat-1",
        },
        "action": "join",
        "outcome": "success",
        "metadata": {"sessionId": "s-1", "consentRef": "c-1"},
    }
    event.update(overrides)
    return event


# Permissions as a parsed token lists them: none, read, write, read-write, read-write-get-update,
# get, get-update.
NONE = {
    "read": False,
    "write": False,
    "manage": False,
    "delete": False,
    "get": False,
    "update": False,
    "join": False,
}
R = {**NONE, "read": True}
W = {**NONE, "write": True}
RW = {**NONE, "read": True, "write": True}
RWGU = {**RW, "get": True, "update": True}
G = {**NONE, "get": True}
GU = {**G, "update": True}


def parse(client: PubNubAsyncio, token: str) -> dict[str, Any]:
    # SDK 10.8's parse_token does not restore base64 padding.
    parsed: dict[str, Any] = client.parse_token(token + "=" * (-len(token) % 4))
    return parsed
