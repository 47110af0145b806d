"""The fault kinds the soak injects, the seeded plan of which consultation gets which and when, and
injecting one into a consultation whose call is live (``inject``).

Every kind that fits in seconds is planned at least once in a run of ``len(KINDS)`` consultations
or more (a seeded shuffle of the kinds, then seeded draws); each planned fault also gets a seeded
moment: a delay into the call before it starts. Clinic down longer than a token's life (a minute
at the least) and UDP loss on loopback (iptables, root) are left for the long run's next slice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from telehealth_client.consultation.session import now
from telehealth_client.protocol import channels
from telehealth_client.protocol.channels import ConsultationChannels
from telehealth_client.protocol.messages import (
    ChatMessage,
    ConsultationCancelled,
    Offer,
    PatientCheckedIn,
    encode,
)
from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.stack import DevStack
from tests.support.run_agent import RunAgent, descendants

RELAY_OUTAGE = "relay-outage"
RELAY_5XX = "relay-5xx"
RELAY_LATENCY = "relay-latency"
TURN_RESTART = "turn-restart"
TURN_FREEZE = "turn-freeze"
KIOSK_SIGKILL = "kiosk-sigkill"
MEDIA_SIGKILL = "media-sigkill"
REVOKED_TOKEN = "revoked-token"
CHECK_IN_FLOOD = "check-in-flood"
FORGED_MESSAGES = "forged-messages"
KINDS = (
    RELAY_OUTAGE,
    RELAY_5XX,
    RELAY_LATENCY,
    TURN_RESTART,
    TURN_FREEZE,
    KIOSK_SIGKILL,
    MEDIA_SIGKILL,
    REVOKED_TOKEN,
    CHECK_IN_FLOOD,
    FORGED_MESSAGES,
)
# Kinds that cut the call's media: the soak times the call's way back to live after each.
MEDIA_KINDS = frozenset({TURN_RESTART, TURN_FREEZE, KIOSK_SIGKILL, MEDIA_SIGKILL})
FLOOD_PATIENTS = 12
OUTAGE_SECONDS = (2.0, 5.0)  # drawn: how long an outage, a freeze or a latency lasts
ORPHAN_WITHIN = 15.0  # a killed agent's media children see their stdin close and exit


@dataclass(frozen=True)
class Planned:
    kind: str
    delay_s: float  # into the live call, before the fault starts
    length_s: float


def plan(seed: int, consultations: int, only: tuple[str, ...] = KINDS) -> list[list[Planned]]:
    """Each consultation's faults: every kind once over the first ``len(only)`` (shuffled), then
    one kind drawn per consultation; about one consultation in four gets a second one."""
    unknown = sorted(set(only) - set(KINDS))
    if unknown or not only:
        raise ValueError(f"fault kinds: {unknown or 'none given'}; the kinds are {', '.join(KINDS)}")
    rng = random.Random(seed)
    kinds = list(only)
    rng.shuffle(kinds)
    planned: list[list[Planned]] = []
    for n in range(consultations):
        chosen = [kinds[n]] if n < len(kinds) else [rng.choice(kinds)]
        if n >= len(kinds) and len(kinds) > 1 and rng.random() < 0.25:
            chosen.append(rng.choice([k for k in kinds if k != chosen[0]]))
        planned.append(
            [
                Planned(k, round(rng.uniform(0.0, 2.0), 2), round(rng.uniform(*OUTAGE_SECONDS), 2))
                for k in chosen
            ]
        )
    # A run shorter than the kinds: the ones left over go to its consultations, two or more each.
    for index, kind in enumerate(kinds[consultations:]):
        if consultations:
            planned[index % consultations].append(Planned(kind, 0.5, OUTAGE_SECONDS[0]))
    return planned


@dataclass
class Scene:
    """What a fault acts on: the stack, both agents, and the consultation under way."""

    stack: DevStack
    kiosk: RunAgent
    provider: RunAgent
    provider_id: str
    patient_id: str
    consultation_id: str
    http: aiohttp.ClientSession
    restart_kiosk: Callable[[], Awaitable[None]]
    flood_counter: list[int]
    usage: Callable[[], Awaitable[dict[str, Any]]]


@dataclass
class Outcome:
    kind: str
    began: float  # time.monotonic()
    ended: float  # when the fault was lifted (the process started again, the network back)
    detail: dict[str, Any]


async def inject(planned: Planned, scene: Scene) -> Outcome:
    """Start the fault, hold it ``length_s`` where it lasts, lift it; what it did."""
    await asyncio.sleep(planned.delay_s)  # the seeded moment into the call
    began = time.monotonic()
    detail = await _INJECTORS[planned.kind](scene, planned.length_s)
    return Outcome(planned.kind, began, time.monotonic(), detail)


async def _relay_outage(scene: Scene, length: float) -> dict[str, Any]:
    scene.stack.relay.stall()
    try:
        await asyncio.sleep(length)  # the outage's length: the fault itself, not a wait for an event
    finally:
        scene.stack.relay.resume()
    return {"seconds": length}


async def _relay_5xx(scene: Scene, length: float) -> dict[str, Any]:
    count = int(length * 10)
    scene.stack.relay.fail_next(count, 503)
    return {"requests": count}


async def _relay_latency(scene: Scene, length: float) -> dict[str, Any]:
    scene.stack.relay.set_delay(0.4)
    try:
        await asyncio.sleep(length)  # the latency's length
    finally:
        scene.stack.relay.set_delay(0.0)
    return {"delay_s": 0.4, "seconds": length}


async def _turn_restart(scene: Scene, length: float) -> dict[str, Any]:
    await scene.stack.turn.restart()
    return {}


async def _turn_freeze(scene: Scene, length: float) -> dict[str, Any]:
    pid = scene.stack.turn.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        await asyncio.sleep(length)  # the freeze's length
    finally:
        os.kill(pid, signal.SIGCONT)
    return {"seconds": length}


async def _kiosk_sigkill(scene: Scene, length: float) -> dict[str, Any]:
    children = await asyncio.to_thread(descendants, scene.kiosk.pid)
    await scene.kiosk.kill()
    await scene.restart_kiosk()  # as systemd's Restart= would
    orphans = await _survivors(children, ORPHAN_WITHIN)
    return {"media_children": len(children), "orphans": len(orphans)}


async def _survivors(pids: list[int], within: float) -> list[int]:
    deadline = time.monotonic() + within
    while True:
        alive = [pid for pid in pids if await asyncio.to_thread(_alive, pid)]
        if not alive or time.monotonic() > deadline:
            return alive
        await asyncio.sleep(0.2)  # a poll's period


def _alive(pid: int) -> bool:
    """Running still (a zombie waits for its parent to reap it: it holds nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


async def _media_sigkill(scene: Scene, length: float) -> dict[str, Any]:
    children = await asyncio.to_thread(descendants, scene.kiosk.pid)
    for pid in children:
        os.kill(pid, signal.SIGKILL)  # the call's and the warm spare's: a crash of each
    return {"killed": len(children)}


async def _revoked_token(scene: Scene, length: float) -> dict[str, Any]:
    assert scene.stack.clinic is not None
    provider = ClinicClient(scene.stack.clinic.url, scene.stack.users[scene.provider_id].credential)
    try:
        revoked = await provider.revoke_access(scene.patient_id, scene.consultation_id)
    finally:
        await provider.aclose()
    return {"revoked": revoked}


async def _flood(scene: Scene, length: float) -> dict[str, Any]:
    """``FLOOD_PATIENTS`` check-ins from another kiosk's patients into the provider's waiting room
    at once, each then cancelled (the patient left): the real consultation goes on meanwhile."""
    assert scene.stack.clinic is not None
    kiosk_id = next(k for k in scene.stack.kiosks if k != scene.kiosk.user_id)
    clinic = ClinicClient(scene.stack.clinic.url, scene.stack.kiosk_credential(kiosk_id))
    buses: list[tuple[PubNubBus, str, str]] = []
    try:
        first = scene.flood_counter[0]
        scene.flood_counter[0] += FLOOD_PATIENTS
        for n in range(first, first + FLOOD_PATIENTS):
            patient = f"pat-flood-{n}"
            cid = channels.consultation(scene.provider_id, patient)
            await clinic.record_consent(patient, True, None)
            grant = await clinic.request_token(patient, "patient", providerId=scene.provider_id)
            bus = PubNubBus(scene.stack.bus_config(patient, token=grant.token))
            buses.append((bus, patient, cid))
        await asyncio.gather(
            *(
                bus.publish(
                    channels.waiting_room(scene.provider_id),
                    encode(
                        PatientCheckedIn(
                            appointment_id=f"appt-{patient}",
                            patient_id=patient,
                            consultation_id=cid,
                            timestamp=now(),
                        )
                    ),
                )
                for bus, patient, cid in buses
            )
        )
        await scene.provider.poll(
            scene.http,
            "/v1/waiting-room",
            lambda answer: {cid for _, _, cid in buses} <= _waiting_ids(answer),
            "listed the flood's patients",
            30.0,
        )
        for bus, patient, cid in buses:
            left = ConsultationCancelled(cancelled_by=patient, reason="patient-left", timestamp=now())
            await bus.publish(cid, encode(left))
        await scene.provider.poll(
            scene.http,
            "/v1/waiting-room",
            lambda answer: not {cid for _, _, cid in buses} & _waiting_ids(answer),
            "emptied the flood's patients",
            30.0,
        )
    finally:
        for bus, _, _ in buses:
            await bus.aclose()
        await clinic.aclose()
    return {"patients": FLOOD_PATIENTS}


def _waiting_ids(answer: Any) -> set[str]:
    return {str(each["consultationId"]) for each in answer["waiting"]}


def forged_chat_id(consultation_id: str) -> str:
    """The ID of the soak's forged chat message in ``consultation_id``: neither side may show it."""
    digest = hashlib.sha256(f"soak-forged:{consultation_id}".encode()).digest()[:16]
    return str(uuid.UUID(bytes=digest, version=4))  # chat IDs are version-4 UUIDs


async def _forged(scene: Scene, length: float) -> dict[str, Any]:
    """Malformed and forged messages on every channel the two agents follow, delivered by the relay
    as PubNub would deliver them from an intruder: not ciphertext, ciphertext of broken JSON,
    of a wrong shape, a chat message claiming the provider's name, an offer from nobody in the call."""
    crypto = RotatingCryptoModule(scene.stack.keys.cipher_key)
    own = ConsultationChannels.parse(scene.consultation_id)
    targets = [
        scene.consultation_id,
        own.video,
        channels.waiting_room(scene.provider_id),
        channels.notification(scene.provider_id),
        channels.notification(scene.patient_id),
    ]
    forged_chat = ChatMessage(
        id=forged_chat_id(scene.consultation_id),
        sender_id=scene.provider_id,
        sender_role="provider",
        text="forged",
        sent_at=now(),
    )
    offer = Offer(sender_id="intruder", timestamp=now(), sdp="v=0\r\n" + "a=x\r\n" * 50)
    bodies: list[Any] = [
        12345,
        "not ciphertext",
        crypto.encrypt("{" * 3000),
        crypto.encrypt(json.dumps({"action": "PROVIDER_JOINED"})),
        crypto.encrypt(json.dumps(encode(forged_chat))),
        crypto.encrypt(json.dumps(encode(offer))),
    ]
    delivered = 0
    for channel in targets:
        for body in bodies:
            scene.stack.relay.inject_event(channel, 0, body, publisher="intruder")
            delivered += 1
    return {"messages": delivered, "channels": len(targets)}


_INJECTORS: dict[str, Callable[[Scene, float], Awaitable[dict[str, Any]]]] = {
    RELAY_OUTAGE: _relay_outage,
    RELAY_5XX: _relay_5xx,
    RELAY_LATENCY: _relay_latency,
    TURN_RESTART: _turn_restart,
    TURN_FREEZE: _turn_freeze,
    KIOSK_SIGKILL: _kiosk_sigkill,
    MEDIA_SIGKILL: _media_sigkill,
    REVOKED_TOKEN: _revoked_token,
    CHECK_IN_FLOOD: _flood,
    FORGED_MESSAGES: _forged,
}
