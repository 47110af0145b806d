"""Consultation benchmark on the development stack, next to the bare bus in the same run.

Prints JSON:
- ``check_in_to_provider_ms``: the patient's ``check_in`` call (clinic token, consent read,
  subscribe, publish) until the provider's hub reports the consultation checked in;
- ``join_to_patient_connecting_ms``: the provider's ``join`` call until the patient's hub reports
  ``connecting``;
- ``device_status_publish_to_applied_ms``: a ``DEVICE_STATUS`` report from the patient (legal in
  any open state, so it repeats) until the provider's hub reports it applied (decoded, checked,
  transitioned, state file written, emitted);
- ``bare_bus_publish_to_handler_ms``: the same payload between two plain ``PubNubBus`` clients
  (a patient token and the provider's standing token) on the same relay, as the baseline;
- ``queue_scale``: with 1, 50 and 150 consultations waiting on the one provider (the others
  checked in with real patient tokens through the SDK), ``join_to_patient_connecting_ms`` and
  ``chat_publish_to_provider_handler_ms`` (a patient's chat message on its waiting consultation,
  from its publish until the provider's session hands it to its message handler).

Everything is real: the relay enforcing Access Manager, clinic tokens, encryption, the endpoints
of ``telehealth_devstack.demo.cast``. Lifecycle and bare samples alternate one by one, so both see
the same machine load; each is one message in flight at a time. A lifecycle sample ends when the
provider's hub subscriber holds the event (what the local API's live stream would see); a bare
one when the receiving bus calls its handler. Every applied message writes the state file with
fsync before it is announced: ``state_file_write_ms`` times that write alone (in a thread, from
the event loop, as the session does it), and ``--state-dir`` (for instance on tmpfs,
``/dev/shm``) shows what the disk costs.

    .venv/bin/python scripts/bench_consultation.py [--rounds 5] [--messages 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Self

from telehealth_client import events, logs
from telehealth_client.consultation import state_file
from telehealth_client.consultation.patient import DeviceReport
from telehealth_client.consultation.session import now
from telehealth_client.protocol import channels
from telehealth_client.protocol.channels import ConsultationChannels
from telehealth_client.protocol.messages import (
    ChatMessage,
    ConsultationState,
    DeviceStatus,
    PatientCheckedIn,
    encode,
)
from telehealth_client.pubsub.bus import ConnectionStatus, Envelope, StatusChange
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.clinic import RateLimit
from telehealth_devstack.demo.cast import DEPARTMENT, PROVIDER, Cast
from telehealth_devstack.demo.witness import Witness

WAIT_SECONDS = 10.0
WARM_UP = 10  # samples of each kind dropped before measuring (first requests open connections)
BARE_PATIENT = "pat-bare"


def stats(samples_ms: list[float]) -> dict[str, float | int]:
    ordered = sorted(samples_ms)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        "min": round(ordered[0], 3),
        "max": round(ordered[-1], 3),
        "n": len(ordered),
    }


def device_report(n: int) -> DeviceReport:
    # The verdict changes every time: the kiosk publishes DEVICE_STATUS only when it changes.
    return DeviceReport(
        camera="pass" if n % 2 else "warn", microphone="pass", speaker="pass", network="video"
    )


async def seen_after(witness: Witness, mark: int, matches: Any) -> float:
    sighting = await asyncio.wait_for(witness.seen(matches, after=mark), WAIT_SECONDS)
    return sighting.at


class BarePair:
    """Two plain buses on the stack: a patient publishing, the provider's standing token receiving."""

    def __init__(
        self, sender: PubNubBus, receiver: PubNubBus, channel: str, wait_seconds: float = WAIT_SECONDS
    ) -> None:
        self.sender = sender
        self.receiver = receiver
        self.channel = channel
        self.wait_seconds = wait_seconds
        self._arrived: asyncio.Future[float] | None = None

    @classmethod
    async def open(cls, cast: Cast, wait_seconds: float = WAIT_SECONDS) -> Self:
        """Also used by scripts/bench_durability.py (its waits are longer)."""
        assert cast.stack.clinic is not None
        await cast.kiosk_clinic.record_consent(BARE_PATIENT, True, None)
        patient = await cast.kiosk_clinic.request_token(BARE_PATIENT, "patient", providerId=PROVIDER)
        provider_clinic = ClinicClient(cast.stack.clinic.url, cast.stack.users[PROVIDER].credential)
        try:
            provider = await provider_clinic.request_token(PROVIDER, "provider", departmentId=DEPARTMENT)
        finally:
            await provider_clinic.aclose()
        pair = cls(
            cast.bus(BARE_PATIENT, patient.token),
            cast.bus(PROVIDER, provider.token),
            # Its .video channel: the provider agent's wildcard (consultation.{p}.*) brings the
            # consultation's own channel, and the agent would share each bare sample's work.
            ConsultationChannels.parse(channels.consultation(PROVIDER, BARE_PATIENT)).video,
            wait_seconds,
        )
        connected = asyncio.Event()

        def on_status(change: StatusChange) -> None:
            if change.status is ConnectionStatus.CONNECTED:
                connected.set()

        remove = pair.receiver.add_status_listener(on_status)
        await pair.receiver.subscribe([pair.channel], pair._on_message)
        if pair.receiver.status is not ConnectionStatus.CONNECTED:
            await asyncio.wait_for(connected.wait(), wait_seconds)
        remove()
        return pair

    def _on_message(self, envelope: Envelope) -> None:
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(time.perf_counter())

    async def sample(self, payload: dict[str, Any]) -> float:
        self._arrived = asyncio.get_running_loop().create_future()
        started = time.perf_counter()
        await self.sender.publish(self.channel, payload)
        arrived = await asyncio.wait_for(self._arrived, self.wait_seconds)
        return (arrived - started) * 1000


async def consultation_round(cast: Cast, n: int) -> tuple[float, float, str]:
    """Check-in then join of one patient: (check-in ms, join ms, consultation ID)."""
    patient_id = f"pat-bench-{n}"
    cid = channels.consultation(PROVIDER, patient_id)
    await cast.kiosk_clinic.record_consent(patient_id, True, None)
    provider, patient = cast.witnesses["provider"], cast.witnesses["patient"]

    def state(target: ConsultationState) -> Any:
        return lambda e: isinstance(e, events.StateChanged) and e.consultation_id == cid and e.state is target

    mark = provider.mark()
    started = time.perf_counter()
    await cast.patient.check_in(
        appointment_id=f"appt-bench-{n}",
        patient_id=patient_id,
        provider_id=PROVIDER,
        department_id=DEPARTMENT,
    )
    check_in_ms = (await seen_after(provider, mark, state(ConsultationState.CHECKED_IN)) - started) * 1000

    mark = patient.mark()
    started = time.perf_counter()
    await cast.provider.join(cid)
    join_ms = (await seen_after(patient, mark, state(ConsultationState.CONNECTING)) - started) * 1000
    return check_in_ms, join_ms, cid


async def end_round(cast: Cast, cid: str) -> None:
    patient = cast.witnesses["patient"]
    mark = patient.mark()
    await cast.provider.end(cid, follow_up_required=False)
    await seen_after(patient, mark, lambda e: isinstance(e, events.EndpointIdle))


async def lifecycle_latency(
    cast: Cast, bare: BarePair, cid: str, messages: int
) -> tuple[list[float], list[float]]:
    provider = cast.witnesses["provider"]

    def applied(e: Any) -> bool:
        return isinstance(e, events.DeviceStatusReported) and e.consultation_id == cid

    lifecycle_ms: list[float] = []
    bare_ms: list[float] = []
    for n in range(messages + WARM_UP):
        report = device_report(n)
        payload = encode(
            DeviceStatus(
                camera=report.camera,
                microphone=report.microphone,
                speaker=report.speaker,
                network=report.network,
                timestamp=now(),
            )
        )
        bare_sample = await bare.sample(payload)

        mark = provider.mark()
        started = time.perf_counter()
        publishing = asyncio.ensure_future(cast.patient.report_devices(report))
        try:
            seen = await seen_after(provider, mark, applied)
        finally:
            await publishing
        if n >= WARM_UP:
            bare_ms.append(bare_sample)
            lifecycle_ms.append((seen - started) * 1000)
    return lifecycle_ms, bare_ms


async def state_file_writes(cast: Cast, cid: str, directory: Path, writes: int) -> list[float]:
    """What one applied message spends on its state file: the provider's consultation written
    as the session writes it (``state_file.save`` in a thread), timed from the event loop."""
    consultation = cast.provider.session(cid).consultation
    samples: list[float] = []
    for _ in range(writes):
        started = time.perf_counter()
        await asyncio.to_thread(state_file.save, directory, consultation)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


QUEUE_SIZES = (1, 50, 150)
CHAT_SAMPLES = 50


async def waiting_patients(cast: Cast, first: int, count: int) -> list[tuple[PubNubBus, str]]:
    """``count`` more patients checked in on the provider's waiting room (consent, a patient token,
    the SDK's publish), waited for until the provider follows each; (bus, consultation ID)."""
    provider = cast.witnesses["provider"]
    mark = provider.mark()
    added: list[tuple[PubNubBus, str]] = []
    for n in range(first, first + count):
        patient_id = f"pat-wait-{n}"
        cid = channels.consultation(PROVIDER, patient_id)
        await cast.kiosk_clinic.record_consent(patient_id, True, None)
        grant = await cast.kiosk_clinic.request_token(patient_id, "patient", providerId=PROVIDER)
        bus = cast.bus(patient_id, grant.token)
        checked_in = PatientCheckedIn(
            appointment_id=f"appt-{patient_id}", patient_id=patient_id, consultation_id=cid, timestamp=now()
        )
        await bus.publish(channels.waiting_room(PROVIDER), encode(checked_in))
        added.append((bus, cid))
    for _, cid in added:
        await asyncio.wait_for(provider.seen(checked_in_as(cid), after=mark), WAIT_SECONDS * 3)
    return added


def checked_in_as(cid: str) -> Any:
    return lambda e: (
        isinstance(e, events.StateChanged)
        and e.consultation_id == cid
        and e.state is ConsultationState.CHECKED_IN
    )


async def chat_latency(cast: Cast, bus: PubNubBus, cid: str, samples: int) -> list[float]:
    """A waiting patient's chat message, publish to the provider's message handler."""
    arrived: dict[str, float] = {}
    waiting: dict[str, asyncio.Future[None]] = {}

    def handler(message: Any, _envelope: Envelope) -> None:
        if isinstance(message, ChatMessage) and message.id in waiting:
            arrived[message.id] = time.perf_counter()
            waiting[message.id].set_result(None)

    remove = cast.provider.session(cid).add_message_handler(handler)
    out: list[float] = []
    try:
        for n in range(samples + WARM_UP):
            message_id = str(uuid.uuid4())
            waiting[message_id] = asyncio.get_running_loop().create_future()
            chat = ChatMessage(
                id=message_id, sender_id=bus.user_id, sender_role="patient", text="ping", sent_at=now()
            )
            started = time.perf_counter()
            await bus.publish(cid, encode(chat))
            await asyncio.wait_for(waiting[message_id], WAIT_SECONDS)
            if n >= WARM_UP:
                out.append((arrived[message_id] - started) * 1000)
    finally:
        remove()
    return out


async def queue_scale(cast: Cast, rounds: int) -> dict[str, Any]:
    """Join and chat latency with 1, 50 and 150 consultations waiting on the one provider."""
    results: dict[str, Any] = {}
    waiting: list[tuple[PubNubBus, str]] = []
    for size in QUEUE_SIZES:
        waiting += await waiting_patients(cast, len(waiting), size - len(waiting))
        assert len(cast.provider.queue) == size
        chat_bus, chat_cid = waiting[-1]
        chat_ms = await chat_latency(cast, chat_bus, chat_cid, CHAT_SAMPLES)
        joins: list[float] = []
        for n in range(rounds):  # one more checks in, is joined (the measure) and ended
            _, join_ms, cid = await consultation_round(cast, 1000 * size + n)
            joins.append(join_ms)
            await end_round(cast, cid)
        results[str(size)] = {
            "waiting": size,
            "join_to_patient_connecting_ms": stats(joins),
            "chat_publish_to_provider_handler_ms": stats(chat_ms),
        }
    return results


async def bench(rounds: int, messages: int, state_dir: Path) -> dict[str, Any]:
    # queue_scale checks in 150 patients with the one kiosk's credential: far past the clinic's
    # default limit on patient token minting, which would answer 429.
    cast = Cast(state_dir, media=False, patient_token_limit=RateLimit(per_minute=100_000, burst=1_000))
    try:
        await cast.start_stack()
        await cast.start_agents()
        bare = await BarePair.open(cast)
        check_ins: list[float] = []
        joins: list[float] = []
        lifecycle_ms: list[float] = []
        bare_ms: list[float] = []
        writes_ms: list[float] = []
        for n in range(rounds):
            check_in_ms, join_ms, cid = await consultation_round(cast, n)
            check_ins.append(check_in_ms)
            joins.append(join_ms)
            if n == rounds - 1:
                lifecycle_ms, bare_ms = await lifecycle_latency(cast, bare, cid, messages)
                writes_ms = await state_file_writes(cast, cid, state_dir / "bench-writes", 50)
            await end_round(cast, cid)
        # Last: the waiting patients' buses (150 in this process) stay until the end, and would
        # load the samples above.
        scale = await queue_scale(cast, rounds)
    finally:
        await cast.aclose()
    added = statistics.median(lifecycle_ms) - statistics.median(bare_ms)
    return {
        "rounds": rounds,
        "check_in_to_provider_ms": stats(check_ins),
        "join_to_patient_connecting_ms": stats(joins),
        "device_status_publish_to_applied_ms": stats(lifecycle_ms),
        "bare_bus_publish_to_handler_ms": stats(bare_ms),
        "consultation_layer_adds_p50_ms": round(added, 3),
        "queue_scale": scale,
        "queue_scale_note": "each size: that many waiting; joins of one more patient (--rounds)",
        # Part of what the layer adds: each applied message is persisted before it is announced.
        "state_file_write_ms": stats(writes_ms),
        "target": "the consultation layer adds under 2 ms p50 over the bare bus",
        "target_met": added < 2.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="consultations checked in and joined")
    parser.add_argument("--messages", type=int, default=200, help="DEVICE_STATUS (and bare) samples")
    parser.add_argument(
        "--state-dir", type=Path, help="where the agents write their state files (default: a temporary one)"
    )
    args = parser.parse_args()
    if args.rounds < 1 or args.messages < 1:
        parser.error("--rounds and --messages must be at least 1")
    # Logs on stderr, so stdout is the JSON alone.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logs.quiet_url_loggers()
    with tempfile.TemporaryDirectory(prefix="telehealth-bench-", dir=args.state_dir) as directory:
        results = asyncio.run(bench(args.rounds, args.messages, Path(directory)))
    # Each applied message writes the state file (fsync of file and directory): the disk under
    # the state directory is part of the result, so name it.
    results["state_dir_parent"] = str(args.state_dir or tempfile.gettempdir())
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
