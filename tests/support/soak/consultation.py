"""One consultation of the soak, step by step through the two agents' local APIs, as the README's
curl walkthrough drives it: device check, consent, check-in, the provider's waiting room, a queue
update, join, a call with media both ways, chat both ways (during the planned faults), an emergency
escalated and resolved in some, the call ended, wrap-up and the end with its summary.

``run_consultation`` returns its record: ``completed``, or the step that failed and why; what each
side's chat showed of each message (by ID); each fault and, for those that cut media, how long the
call took to be live again on both sides after it was lifted."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from telehealth_client.pubsub.crypto import DecryptionError, RotatingCryptoModule
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.stack import DEFAULT_DEPARTMENT
from tests.support.soak.faults import MEDIA_KINDS, Outcome, Planned, Scene, forged_chat_id, inject

STEP_WITHIN = 30.0  # what the other agent learns over PubNub, on a shared 2-core machine
MEDIA_WITHIN = 90.0  # the call live both ways (media children, TURN), or back after a fault
DIP_WITHIN = 10.0  # after a media fault is lifted: how long to look for the call's dip
CHAT_EACH_WAY = 2  # messages each side sends: one during the faults, one after them
WATCH_PERIOD = 0.2
CONSULTATION_WITHIN = 300.0  # one consultation, all its steps and faults, at the most


@dataclass
class Record:
    """What one consultation did; ``step`` is the one under way (the failing one on failure)."""

    index: int
    consultation_id: str
    step: str = "start"
    completed: bool = False
    error: str | None = None
    seconds: float = 0.0
    faults: list[dict[str, Any]] = field(default_factory=list)
    chat: dict[str, Any] = field(default_factory=dict)
    emergency: bool = False
    summary: dict[str, Any] | None = None
    device_check: str | None = None
    in_call: dict[str, Any] | None = None  # each agent's usage late in the call, before it ends


def consultation_of(status: dict[str, Any], consultation_id: str) -> dict[str, Any] | None:
    found = [c for c in status["consultations"] if c["consultationId"] == consultation_id]
    return found[0] if found else None


def call_status(status: dict[str, Any], consultation_id: str) -> str | None:
    one = consultation_of(status, consultation_id)
    return None if one is None or one["call"] is None else str(one["call"]["status"])


def in_state(consultation_id: str, state: str) -> Any:
    return lambda status: (
        (one := consultation_of(status, consultation_id)) is not None and one["state"] == state
    )


class CallWatch:
    """Both sides' call status every ``WATCH_PERIOD`` while a fault runs: (time, kiosk, provider);
    an agent that does not answer (killed, starting) counts as ``down``."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.samples: list[tuple[float, str, str]] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def _status(self, agent: Any) -> str:
        try:
            async with asyncio.timeout(2.0):
                status = await agent.call(self.scene.http, "GET", "/v1/status")
        except Exception:  # killed, starting again, or busy past 2 s: not live
            return "down"
        return call_status(status, self.scene.consultation_id) or "none"

    async def _run(self) -> None:
        while not self._stopping.is_set():
            kiosk = await self._status(self.scene.kiosk)
            provider = await self._status(self.scene.provider)
            self.samples.append((time.monotonic(), kiosk, provider))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), WATCH_PERIOD)  # the sampling period

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Ends the loop by its flag, not by cancelling it: Python 3.11's ``wait_for`` can swallow a
        cancellation that meets its own completion, and a loop that lost its cancel runs forever."""
        self._stopping.set()
        if self._task is not None:
            await self._task

    def live_both(self, sample: tuple[float, str, str]) -> bool:
        return sample[1] == "live" and sample[2] == "live"

    async def recovery(self, outcome: Outcome) -> dict[str, Any]:
        """Seconds from the fault lifted until the call was live on both sides after its dip (0
        when it never dipped within ``DIP_WITHIN``); ``dipped``: whether it left live at all."""
        deadline = outcome.ended + MEDIA_WITHIN
        while time.monotonic() < deadline:
            since = [s for s in self.samples if s[0] >= outcome.began]
            dips = [s for s in since if not self.live_both(s)]
            if dips:
                back = [s for s in since if s[0] > dips[-1][0] and self.live_both(s)]
                if back:
                    return {"dipped": True, "recovery_s": round(max(0.0, back[0][0] - outcome.ended), 2)}
            elif time.monotonic() > outcome.ended + DIP_WITHIN and since and self.live_both(since[-1]):
                return {"dipped": False, "recovery_s": 0.0}
            await asyncio.sleep(WATCH_PERIOD)  # the next sample
        raise TimeoutError(f"the call never came back live on both sides after {outcome.kind}")


async def run_consultation(scene: Scene, index: int, planned: list[Planned], emergency: bool) -> Record:
    record = Record(index, scene.consultation_id, emergency=emergency)
    began = time.monotonic()
    try:
        async with asyncio.timeout(CONSULTATION_WITHIN):  # a step stuck past its own limits fails too
            await _steps(scene, record, planned)
        record.completed = True
    except Exception as exc:  # the record names the step; the run goes on with the next one
        record.error = f"{type(exc).__name__}: {exc}"[:500]
    record.seconds = round(time.monotonic() - began, 2)
    return record


async def _steps(scene: Scene, record: Record, planned: list[Planned]) -> None:
    kiosk, provider, http, cid = scene.kiosk, scene.provider, scene.http, scene.consultation_id
    one = f"/v1/consultations/{cid}"

    record.step = "device-check"
    started = await kiosk.call(http, "POST", "/v1/device-checks", {"skip": ["speaker"]})
    check_id = started["check"]["id"]
    done = await kiosk.poll(
        http,
        f"/v1/device-checks/{check_id}",
        lambda a: a["check"]["state"] != "running",
        "ended its device check",
        STEP_WITHIN,
    )
    record.device_check = done["check"]["state"]
    if record.device_check != "done":
        raise RuntimeError(f"the device check {record.device_check}: {done['check'].get('error')}")

    record.step = "consent"
    assert scene.stack.clinic is not None
    clinic = ClinicClient(scene.stack.clinic.url, scene.stack.kiosk_credential(kiosk.user_id))
    try:
        await clinic.record_consent(scene.patient_id, True, None)
    finally:
        await clinic.aclose()
    consent = await kiosk.call(
        http, "POST", "/v1/consent/read", {"patientId": scene.patient_id, "providerId": scene.provider_id}
    )
    if not consent["granted"]:
        raise RuntimeError(f"consent not granted: {consent}")

    record.step = "check-in"
    await kiosk.call(
        http,
        "POST",
        "/v1/check-in",
        {
            "appointmentId": f"appt-{scene.patient_id}",
            "patientId": scene.patient_id,
            "providerId": scene.provider_id,
            "departmentId": DEFAULT_DEPARTMENT,
        },
    )
    await provider.poll(
        http,
        "/v1/waiting-room",
        lambda a: any(w["consultationId"] == cid for w in a["waiting"]),
        "listed the patient",
        STEP_WITHIN,
    )

    record.step = "queue-update"
    await provider.call(http, "POST", "/v1/waiting-room/queue-updates", {"minutesPerPatient": 5})
    await kiosk.until(
        http,
        lambda s: (c := consultation_of(s, cid)) is not None and c["queuePosition"] is not None,
        "learnt its queue position",
        STEP_WITHIN,
    )

    record.step = "join"
    await provider.call(http, "POST", f"{one}/join")
    await kiosk.until(http, in_state(cid, "connecting"), "saw the provider join", STEP_WITHIN)

    record.step = "call"
    await provider.call(http, "POST", f"{one}/call")
    for end in (kiosk, provider):
        await end.until(http, lambda s: call_status(s, cid) == "live", "had a live call", MEDIA_WITHIN)
    await kiosk.until(http, in_state(cid, "in-progress"), "was in progress", STEP_WITHIN)

    record.step = "faults and chat"
    sent: dict[str, list[str]] = {"kiosk": [], "provider": []}
    watch = CallWatch(scene)
    watch.start()
    try:
        faults = asyncio.create_task(_faults(scene, planned, watch))
        await _chat(scene, sent, 0)
        outcomes = await faults
        record.faults = outcomes
        await _chat(scene, sent, 1)
    finally:
        await watch.stop()

    record.step = "chat delivered"
    record.chat = await _chat_seen(scene, sent)

    if record.emergency:
        record.step = "emergency"
        await _emergency(scene)

    record.step = "end"
    record.in_call = await scene.usage()  # the call has run a while: its children are settled
    await provider.call(http, "POST", f"{one}/end-call")
    await kiosk.until(
        http, lambda s: call_status(s, cid) in (None, "idle", "ended"), "ended the call", STEP_WITHIN
    )
    await provider.call(http, "POST", f"{one}/wrap-up")
    ended = await provider.call(http, "POST", f"{one}/end", {"followUpRequired": record.index % 2 == 0})
    record.summary = ended["summary"]
    await kiosk.until(http, lambda s: s["status"] == "idle", "was idle again", STEP_WITHIN)


async def _faults(scene: Scene, planned: list[Planned], watch: CallWatch) -> list[dict[str, Any]]:
    outcomes: list[dict[str, Any]] = []
    for each in planned:
        outcome = await inject(each, scene)
        row: dict[str, Any] = {"kind": each.kind, "delay_s": each.delay_s, **outcome.detail}
        if each.kind in MEDIA_KINDS:
            row.update(await watch.recovery(outcome))
        outcomes.append(row)
    return outcomes


async def _chat(scene: Scene, sent: dict[str, list[str]], round_: int) -> None:
    """One message each way (POST answers once it is durable in the sender's outbox); a kiosk
    being started again after its kill is waited for, as the kiosk's screen would retry."""
    kiosk_text = f"soak {scene.patient_id} kiosk {round_}"
    provider_text = f"soak {scene.patient_id} provider {round_}"
    answer = await _retried(scene.kiosk.call, scene.http, "POST", "/v1/chat", {"text": kiosk_text})
    sent["kiosk"].append(answer["message"]["id"])
    path = f"/v1/consultations/{scene.consultation_id}/chat"
    answer = await _retried(scene.provider.call, scene.http, "POST", path, {"text": provider_text})
    sent["provider"].append(answer["message"]["id"])


async def _retried(call: Any, *args: Any) -> Any:
    deadline = time.monotonic() + MEDIA_WITHIN
    while True:
        try:
            return await call(*args)
        except Exception:  # the agent is down or starting again (a kill), or busy: try again
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)  # a retry's pause


async def _chat_seen(scene: Scene, sent: dict[str, list[str]]) -> dict[str, Any]:
    """Each side's chat until it shows what the other sent; the counts by message ID."""
    cid = scene.consultation_id
    kiosk_path, provider_path = "/v1/chat", f"/v1/consultations/{cid}/chat"

    def holds(ids: list[str]) -> Any:
        return lambda answer: set(ids) <= {m["id"] for m in answer["messages"]}

    at_kiosk = at_provider = None
    with contextlib.suppress(TimeoutError):
        at_kiosk = await scene.kiosk.poll(
            scene.http, kiosk_path, holds(sent["provider"]), "chat", STEP_WITHIN
        )
    with contextlib.suppress(TimeoutError):
        at_provider = await scene.provider.poll(
            scene.http, provider_path, holds(sent["kiosk"]), "chat", STEP_WITHIN
        )
    if at_kiosk is None:
        at_kiosk = await scene.kiosk.call(scene.http, "GET", kiosk_path)
    if at_provider is None:
        at_provider = await scene.provider.call(scene.http, "GET", provider_path)
    shown_kiosk = Counter(m["id"] for m in at_kiosk["messages"])
    shown_provider = Counter(m["id"] for m in at_provider["messages"])
    sent_ids = sent["kiosk"] + sent["provider"]
    delivered = [i for i in sent["kiosk"] if shown_provider[i]] + [
        i for i in sent["provider"] if shown_kiosk[i]
    ]
    duplicated = sum(max(0, n - 1) for shown in (shown_kiosk, shown_provider) for n in shown.values())
    forged = forged_chat_id(cid)
    published = _published(scene, sent_ids)
    return {
        "sent": len(sent_ids),
        "delivered": len(delivered),
        "duplicated": duplicated,
        "lost": len(sent_ids) - len(delivered),
        "lost_ids": [i for i in sent_ids if i not in delivered],
        "forged_shown": shown_kiosk[forged] + shown_provider[forged],
        "foreign_shown": len((set(shown_kiosk) | set(shown_provider)) - set(sent_ids)),
        # Told, not judged: a publish retried after a lost answer may reach PubNub twice (the
        # outbox looks in history first); the receiver shows it once all the same.
        "in_history": len(published),  # each sent message once at least, read back from PubNub
        "published_twice": sum(1 for n in published.values() if n > 1),
    }


def _published(scene: Scene, ids: list[str]) -> Counter[str]:
    """How often each of ``ids`` is in the relay's history of the consultation's channel."""
    crypto = RotatingCryptoModule(scene.stack.keys.cipher_key)
    wanted = set(ids)
    seen = Counter[str]()
    for stored in scene.stack.relay.stored_messages(scene.consultation_id):
        try:
            body = crypto.decrypt(stored.payload)
        except DecryptionError:
            continue  # the soak's own malformed messages
        if isinstance(body, dict) and body.get("type") == "chat" and body.get("id") in wanted:
            seen[body["id"]] += 1
    return seen


async def _emergency(scene: Scene) -> None:
    http, provider = scene.http, scene.provider
    raised = await provider.call(
        http,
        "POST",
        "/v1/emergencies",
        {"consultationId": scene.consultation_id, "severity": "critical", "reason": "soak: chest pain"},
    )
    escalation = raised["escalation"]["id"]
    await provider.poll(
        http,
        "/v1/emergencies",
        lambda a: any(e["id"] == escalation and e["delivered"] for e in a["escalations"]),
        "delivered its escalation",
        STEP_WITHIN,
    )
    resolved = await provider.call(
        http, "POST", f"/v1/emergencies/{escalation}/resolve", {"resolution": "stable"}
    )
    if resolved["escalation"]["status"] != "resolved":
        raise RuntimeError(f"the escalation is {resolved['escalation']['status']}")
