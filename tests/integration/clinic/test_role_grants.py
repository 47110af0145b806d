"""Each role's token, as PROTOCOL.md's "Token permissions by role" table says, shown two ways.

1. ``parse_token`` (the SDK's) of the token the clinic stand-in answered: exact resources,
   patterns, App Context users, authorized user and TTL.
2. The real SDK against the enforcing relay, with that token, trying every channel of the table
   (and its neighbours that must stay shut): publish for write, history and the SDK's subscribe
   request for read, get/set UUID metadata for App Context. Allowed ones succeed, every other one gets 403.

Expected permissions are written out by hand from the table, never derived from
``devstack.grants``, so a mistake there cannot hide itself.

The world: dr-lee (cardiology) and dr-okafor (er) are providers, nurse-1 is a cardiology
nurse, pat-1 is dr-lee's patient; the clinic's organization is ``ORGANIZATION``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

import pytest
from pubnub.endpoints.pubsub.subscribe import Subscribe
from pubnub.pubnub_asyncio import PubNubAsyncio

from telehealth_devstack.clinic import Clinic
from telehealth_devstack.relay import Relay
from tests.support.clinic import (
    CART_CREDENTIALS,
    GU,
    KIOSK_CREDENTIAL,
    ORGANIZATION,
    RW,
    RWGU,
    ClientFactory,
    ClinicApi,
    G,
    R,
    W,
    grant_consent,
    parse,
)
from tests.support.relay import SdkClients

pytestmark = pytest.mark.integration


CONSULTATION = "consultation.dr-lee.pat-1"
AUDIT = f"audit.{ORGANIZATION}"
NOTIFY_ANYONE = r"^notification\.[A-Za-z0-9_-]+$"

# Every channel tried with every token: the table's channels for these users, and neighbours
# that only a too-wide grant (an unanchored pattern, another department) would open.
PROBES = [
    CONSULTATION,
    f"{CONSULTATION}.video",
    f"{CONSULTATION}.files",
    f"{CONSULTATION}-pnpres",
    f"{CONSULTATION}.video-pnpres",
    f"{CONSULTATION}.files-pnpres",
    "consultation.dr-lee.pat-2",
    "consultation.dr-lee.pat-2-pnpres",
    "consultation.dr-okafor.pat-3",
    "consultation.dr-leex.pat-1",
    "waiting-room.dr-lee",
    "waiting-room.dr-lee-pnpres",
    "waiting-room.dr-okafor",
    "waiting-room.dr-okafor-pnpres",
    "queue.cardiology",
    "queue.cardiology.urgent",
    "queue.cardiologyx",
    "queue.er",
    "queue.er.urgent",
    "notification.pat-1",
    "notification.pat-1-pnpres",
    "notification.pat-2",
    "notification.dr-lee",
    "notification.dr-lee-pnpres",
    "notification.dr-okafor",
    "notification.dr-okafor-pnpres",
    "notification.nurse-1",
    "notification.nurse-1-pnpres",
    "notification.pat-1.x",
    "presence.providers.cardiology",
    "presence.providers.cardiology-pnpres",
    "presence.providers.er",
    "presence.providers.er-pnpres",
    "emergency.cardiology",
    "emergency.er",
    AUDIT,
    "audit.another-org",
]
USERS = ["pat-1", "pat-2", "dr-lee", "dr-okafor", "nurse-1"]
T = TypeVar("T")

# -- the table, by hand ------------------------------------------------------------------------


def consultation_channels(consultation: str, read_write: T, read: T) -> dict[str, T]:
    """A consultation's chat, video and files channels (``read_write``) and their presence
    channels (``read``): the rows every role that reaches a consultation has."""
    channels = [consultation, f"{consultation}.video", f"{consultation}.files"]
    return {**dict.fromkeys(channels, read_write), **{f"{channel}-pnpres": read for channel in channels}}


def standing_provider_channels(provider: str, department: str) -> dict[str, Any]:
    """A provider's standing token's channels, as a parsed token lists them."""
    return {
        f"notification.{provider}": R,
        f"notification.{provider}-pnpres": R,
        f"waiting-room.{provider}": RW,
        f"waiting-room.{provider}-pnpres": R,
        f"queue.{department}": RW,
        f"presence.providers.{department}": RW,
        f"presence.providers.{department}-pnpres": R,
        f"emergency.{department}": RW,
        AUDIT: W,
    }


def standing_provider_patterns(provider: str, department: str) -> dict[str, Any]:
    """A provider's standing token's channel patterns: its own consultations, its queue's
    sub-channels, anyone's notifications."""
    return {
        NOTIFY_ANYONE: W,
        rf"^queue\.{department}\..*$": RW,
        rf"^consultation\.{provider}\..*$": RW,
        rf"^consultation\.{provider}\..*-pnpres$": R,
    }


STANDING_NURSE_CHANNELS = {
    "notification.nurse-1": R,
    "notification.nurse-1-pnpres": R,
    "queue.cardiology": RWGU,
    "presence.providers.cardiology": R,
    "presence.providers.cardiology-pnpres": R,
    "emergency.cardiology": RW,
    AUDIT: W,
}
NURSE_PATTERNS = {NOTIFY_ANYONE: W, r"^queue\.cardiology\..*$": RWGU}

PATIENT_ACCESS = {
    **consultation_channels(CONSULTATION, "rw", "r"),
    "waiting-room.dr-lee": "w",
    "notification.pat-1": "r",
    "notification.pat-1-pnpres": "r",
    "notification.dr-lee": "w",
    AUDIT: "w",
}
PATIENT_APP_CONTEXT = {"pat-1": "get"}

STANDING_PROVIDER_ACCESS = {
    # its own consultations, by pattern (presence channels included)
    **consultation_channels(CONSULTATION, "rw", "r"),
    "consultation.dr-lee.pat-2": "rw",
    "consultation.dr-lee.pat-2-pnpres": "r",
    "waiting-room.dr-lee": "rw",
    "waiting-room.dr-lee-pnpres": "r",
    "queue.cardiology": "rw",
    "queue.cardiology.urgent": "rw",
    "notification.dr-lee": "r",
    "notification.dr-lee-pnpres": "r",
    "notification.pat-1": "w",
    "notification.pat-2": "w",
    "notification.dr-okafor": "w",
    "notification.nurse-1": "w",
    "presence.providers.cardiology": "rw",
    "presence.providers.cardiology-pnpres": "r",
    "emergency.cardiology": "rw",
    AUDIT: "w",
}
STANDING_PROVIDER_APP_CONTEXT = {"dr-lee": "get update"}

INVITED_PROVIDER_ACCESS = {
    # dr-okafor's own standing grants (er) ...
    "consultation.dr-okafor.pat-3": "rw",
    "waiting-room.dr-okafor": "rw",
    "waiting-room.dr-okafor-pnpres": "r",
    "queue.er": "rw",
    "queue.er.urgent": "rw",
    "notification.dr-okafor": "r",
    "notification.dr-okafor-pnpres": "r",
    "notification.pat-1": "w",
    "notification.pat-2": "w",
    "notification.dr-lee": "w",
    "notification.nurse-1": "w",
    "presence.providers.er": "rw",
    "presence.providers.er-pnpres": "r",
    "emergency.er": "rw",
    AUDIT: "w",
    # ... plus the one consultation it was invited to, and nothing else of dr-lee's.
    **consultation_channels(CONSULTATION, "rw", "r"),
}
INVITED_PROVIDER_APP_CONTEXT = {"dr-okafor": "get update"}

STANDING_NURSE_ACCESS = {
    "queue.cardiology": "rw",
    "queue.cardiology.urgent": "rw",
    "notification.nurse-1": "r",
    "notification.nurse-1-pnpres": "r",
    "notification.pat-1": "w",
    "notification.pat-2": "w",
    "notification.dr-lee": "w",
    "notification.dr-okafor": "w",
    "presence.providers.cardiology": "r",
    "presence.providers.cardiology-pnpres": "r",
    "emergency.cardiology": "rw",
    AUDIT: "w",
}
NURSE_APP_CONTEXT = {"nurse-1": "get"}

NURSE_WITH_CONSULTATION_ACCESS = {
    **STANDING_NURSE_ACCESS,
    **consultation_channels(CONSULTATION, "rw", "r"),
    "waiting-room.dr-lee": "rw",
    "waiting-room.dr-lee-pnpres": "r",
}


# -- fixtures and probes -----------------------------------------------------------------------


@pytest.fixture
async def make_client(clinic_relay: Relay) -> AsyncIterator[ClientFactory]:
    clients = SdkClients(clinic_relay)
    yield clients
    await clients.aclose()


@pytest.fixture
async def world(clinic_relay: Relay, clinic: Clinic, make_client: ClientFactory) -> AsyncIterator[Relay]:
    """Everyone has App Context metadata (so a permitted get answers 200); Access Manager on."""
    admin = make_client("clinic-admin", with_secret_key=True)
    for user in USERS:
        await admin.set_uuid_metadata(uuid=user, name=user).result()
    clinic_relay.enforce_access = True
    yield clinic_relay
    clinic_relay.enforce_access = False


async def token_for(api: ClinicApi, credential: str, **body: str) -> dict[str, Any]:
    status, answer = await api.post("/api/telemedicine/token", body, credential=credential)
    assert status == 200, answer
    return dict(answer)


def status_of(envelope: Any) -> int:
    return int(envelope.status.status_code) if envelope.status.is_error() else 200


async def can_write(client: PubNubAsyncio, channel: str) -> bool:
    status = status_of(await client.publish().channel(channel).message({"type": "probe"}).future())
    assert status in (200, 403), (channel, status)
    return status == 200


async def can_read(client: PubNubAsyncio, channel: str) -> bool:
    status = status_of(await client.fetch_messages().channels([channel]).future())
    assert status in (200, 403), (channel, status)
    return status == 200


async def can_subscribe(client: PubNubAsyncio, channel: str) -> bool:
    # The SDK's own subscribe request (a handshake: it answers at once).
    status = status_of(await Subscribe(client).channels([channel]).timetoken(0).future())
    assert status in (200, 403), (channel, status)
    return status == 200


async def app_context(client: PubNubAsyncio, user: str) -> str:
    """Which of ``get`` and ``update`` the client may do on ``user``'s App Context metadata."""
    allowed = []
    got = status_of(await client.get_uuid_metadata(uuid=user).future())
    assert got in (200, 403), (user, got)
    if got == 200:
        allowed.append("get")
    updated = status_of(await client.set_uuid_metadata(uuid=user, name=user).future())
    assert updated in (200, 403), (user, updated)
    if updated == 200:
        allowed.append("update")
    return " ".join(allowed)


async def observed_access(client: PubNubAsyncio) -> dict[str, str]:
    """Every probe channel this client could use, as ``r``, ``w`` or ``rw``."""
    observed: dict[str, str] = {}
    for channel in PROBES:
        # Nobody publishes on a presence channel (the relay refuses it with 400 for any token).
        write = not channel.endswith("-pnpres") and await can_write(client, channel)
        read = await can_read(client, channel)
        assert await can_subscribe(client, channel) == read, f"subscribe and history disagree on {channel}"
        access = ("r" if read else "") + ("w" if write else "")
        if access:
            observed[channel] = access
    return observed


async def observed_app_context(client: PubNubAsyncio) -> dict[str, str]:
    observed = {user: await app_context(client, user) for user in USERS}
    return {user: allowed for user, allowed in observed.items() if allowed}


async def staff_token(
    api: ClinicApi, make_client: ClientFactory, user: str, role: str, department: str, **context: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The token a staff member's own cart gets: the clinic's answer and the token as parsed."""
    answer = await token_for(
        api, CART_CREDENTIALS[user], userId=user, role=role, departmentId=department, **context
    )
    return answer, parse(make_client("inspector"), answer["token"])


async def assert_works_exactly_as_the_table(
    make_client: ClientFactory, owner: str, token: str, access: Mapping[str, str], app: Mapping[str, str]
) -> None:
    """``owner``'s client with ``token`` can use exactly ``access`` and ``app`` of the probes."""
    client = make_client(owner, token=token)
    assert await observed_access(client) == dict(access)
    assert await observed_app_context(client) == dict(app)


async def assert_bound_to(
    make_client: ClientFactory, token: str, owner: str, someone_else: str, channel: str
) -> None:
    """The token works for its own user ID only (``authorizedUUID``)."""
    assert await can_read(make_client(owner, token=token), channel)
    assert not await can_read(make_client(someone_else, token=token), channel)


# -- the roles ---------------------------------------------------------------------------------


async def test_patient_token(
    world: Relay, clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    api = http.at(clinic)
    await grant_consent(api, "pat-1")
    answer = await token_for(api, KIOSK_CREDENTIAL, userId="pat-1", role="patient", providerId="dr-lee")
    token = parse(make_client("inspector"), answer["token"])

    assert (answer["ttlMinutes"], token["ttl"], token["authorized_uuid"]) == (15, 15, "pat-1")
    assert token["resources"]["channels"] == {
        **consultation_channels(CONSULTATION, RW, R),
        "waiting-room.dr-lee": W,
        "notification.pat-1": R,
        "notification.pat-1-pnpres": R,
        "notification.dr-lee": W,
        AUDIT: W,
    }
    assert token["resources"]["uuids"] == {"pat-1": G}
    assert token["patterns"]["channels"] == {}
    assert token["patterns"]["uuids"] == {}
    assert answer["channelConfig"] == {
        "consultationChannel": CONSULTATION,
        "videoChannel": f"{CONSULTATION}.video",
        "filesChannel": f"{CONSULTATION}.files",
        "waitingRoom": "waiting-room.dr-lee",
        "notificationChannel": "notification.pat-1",
        "providerNotificationChannel": "notification.dr-lee",
        "auditChannel": AUDIT,
    }

    await assert_works_exactly_as_the_table(
        make_client, "pat-1", answer["token"], PATIENT_ACCESS, PATIENT_APP_CONTEXT
    )
    await assert_bound_to(make_client, answer["token"], "pat-1", "pat-2", CONSULTATION)


async def test_standing_provider_token(
    world: Relay, clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    answer, token = await staff_token(http.at(clinic), make_client, "dr-lee", "provider", "cardiology")

    assert (answer["ttlMinutes"], token["ttl"], token["authorized_uuid"]) == (60, 60, "dr-lee")
    assert token["resources"]["channels"] == standing_provider_channels("dr-lee", "cardiology")
    assert token["patterns"]["channels"] == standing_provider_patterns("dr-lee", "cardiology")
    assert token["resources"]["uuids"] == {"dr-lee": GU}
    assert token["patterns"]["uuids"] == {}
    assert answer["channelConfig"] == {
        "notificationChannel": "notification.dr-lee",
        "waitingRoom": "waiting-room.dr-lee",
        "queueChannel": "queue.cardiology",
        "providerPresenceChannel": "presence.providers.cardiology",
        "emergencyChannel": "emergency.cardiology",
        "auditChannel": AUDIT,
    }

    await assert_works_exactly_as_the_table(
        make_client, "dr-lee", answer["token"], STANDING_PROVIDER_ACCESS, STANDING_PROVIDER_APP_CONTEXT
    )
    await assert_bound_to(make_client, answer["token"], "dr-lee", "dr-okafor", "waiting-room.dr-lee")


async def test_a_provider_naming_its_own_consultation_gets_its_standing_grant_and_the_channel_names(
    world: Relay, clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    api = http.at(clinic)
    standing, parsed_standing = await staff_token(api, make_client, "dr-lee", "provider", "cardiology")
    named, parsed_named = await staff_token(
        api, make_client, "dr-lee", "provider", "cardiology", consultationChannel=CONSULTATION
    )
    for part in ("resources", "patterns"):
        assert parsed_named[part] == parsed_standing[part]
    assert named["channelConfig"] == {
        **standing["channelConfig"],
        "consultationChannel": CONSULTATION,
        "videoChannel": f"{CONSULTATION}.video",
        "filesChannel": f"{CONSULTATION}.files",
    }


async def test_invited_provider_token(
    world: Relay, clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    api = http.at(clinic)
    invitation = {"consultationChannel": CONSULTATION, "invitedProviderId": "dr-okafor", "role": "specialist"}
    status, _ = await api.post("/api/telemedicine/invite", invitation, credential=CART_CREDENTIALS["dr-lee"])
    assert status == 201
    answer, token = await staff_token(
        api, make_client, "dr-okafor", "provider", "er", consultationChannel=CONSULTATION
    )

    assert (answer["ttlMinutes"], token["ttl"], token["authorized_uuid"]) == (60, 60, "dr-okafor")
    # Its own standing grant, plus the one consultation it was invited to.
    assert token["resources"]["channels"] == {
        **standing_provider_channels("dr-okafor", "er"),
        **consultation_channels(CONSULTATION, RW, R),
    }
    assert token["patterns"]["channels"] == standing_provider_patterns("dr-okafor", "er")
    assert token["resources"]["uuids"] == {"dr-okafor": GU}
    assert answer["channelConfig"]["consultationChannel"] == CONSULTATION
    assert answer["channelConfig"]["videoChannel"] == f"{CONSULTATION}.video"
    assert answer["channelConfig"]["emergencyChannel"] == "emergency.er"

    await assert_works_exactly_as_the_table(
        make_client, "dr-okafor", answer["token"], INVITED_PROVIDER_ACCESS, INVITED_PROVIDER_APP_CONTEXT
    )
    await assert_bound_to(make_client, answer["token"], "dr-okafor", "dr-lee", CONSULTATION)


async def test_standing_nurse_token(
    world: Relay, clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    answer, token = await staff_token(http.at(clinic), make_client, "nurse-1", "nurse", "cardiology")

    assert (answer["ttlMinutes"], token["ttl"], token["authorized_uuid"]) == (60, 60, "nurse-1")
    assert token["resources"]["channels"] == STANDING_NURSE_CHANNELS
    assert token["patterns"]["channels"] == NURSE_PATTERNS
    assert token["resources"]["uuids"] == {"nurse-1": G}
    assert answer["channelConfig"] == {
        "notificationChannel": "notification.nurse-1",
        "queueChannel": "queue.cardiology",
        "providerPresenceChannel": "presence.providers.cardiology",
        "emergencyChannel": "emergency.cardiology",
        "auditChannel": AUDIT,
    }

    await assert_works_exactly_as_the_table(
        make_client, "nurse-1", answer["token"], STANDING_NURSE_ACCESS, NURSE_APP_CONTEXT
    )
    await assert_bound_to(make_client, answer["token"], "nurse-1", "dr-lee", "queue.cardiology")


async def test_nurse_token_with_an_assigned_consultation(
    world: Relay, clinic: Clinic, http: ClinicApi, make_client: ClientFactory
) -> None:
    assign = {"consultationChannel": CONSULTATION, "nurseId": "nurse-1"}
    status, _ = await http.at(clinic).post(
        "/api/telemedicine/assign", assign, credential=CART_CREDENTIALS["dr-lee"]
    )
    assert status == 201
    answer, token = await staff_token(
        http.at(clinic), make_client, "nurse-1", "nurse", "cardiology", consultationChannel=CONSULTATION
    )

    assert (answer["ttlMinutes"], token["ttl"], token["authorized_uuid"]) == (60, 60, "nurse-1")
    assert token["resources"]["channels"] == {
        **STANDING_NURSE_CHANNELS,
        **consultation_channels(CONSULTATION, RW, R),
        "waiting-room.dr-lee": RW,
        "waiting-room.dr-lee-pnpres": R,
    }
    assert token["patterns"]["channels"] == NURSE_PATTERNS
    assert token["resources"]["uuids"] == {"nurse-1": G}
    assert answer["channelConfig"]["consultationChannel"] == CONSULTATION
    assert answer["channelConfig"]["waitingRoom"] == "waiting-room.dr-lee"

    await assert_works_exactly_as_the_table(
        make_client, "nurse-1", answer["token"], NURSE_WITH_CONSULTATION_ACCESS, NURSE_APP_CONTEXT
    )
