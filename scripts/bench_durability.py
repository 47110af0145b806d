"""Durability benchmark on the development stack, next to the bare bus in the same run.

Prints JSON:
- ``chat_send_to_display_ms``: the patient's ``chat.send`` (sealed, fsync'ed into the outbox,
  then published) until the provider's hub reports ``ChatMessageAdded`` for that message, one
  message in flight at a time; beside it ``bare_bus_publish_to_handler_ms``, the same payload
  between two plain ``PubNubBus`` clients, samples alternating one by one; and
  ``chat_send_returns_ms``, the part spent before ``chat.send`` returns (the message's audit
  record and its outbox entry, each on disk before it returns);
- ``outbox_drain``: ``--queued`` chat messages sent while the kiosk's link to the relay is cut
  (a TCP hop in front of the relay, reset and refusing while cut, as a dead network looks to
  the SDK), then the link restored: the time from the restore until the provider's hub has
  shown every one of them (the bus's reconnect back-off included: it is part of what a
  patient waits for), how many arrived and how many more than once;
- ``audit_appends``: ``AuditTrail.record`` on its own store (every record on disk before it
  returns), awaited one after another and all at once (group commit), in records per second;
- ``bare_bus_publishes_per_second`` beside the drain and the audit rates: sequential awaited
  publishes on the bare bus, measured just before each;
- ``outbox_slow_link``: the outbox's throughput behind a slow link, a relay of its own delaying
  every request by ``--delay-ms`` (300: the relay's fault injection, so a publish's round trip is
  300 ms): ``--burst`` chat items queued with the outbox detached, then attached, timed until it
  has drained (every item acknowledged) and until a subscriber has shown them all; (a) all in
  one consultation, (b) spread over ``--consultations`` consultations, for each ``--in-flight``
  limit (1 sends one item at a time, as the outbox did before issue 19; ``default`` is the
  outbox's own limit). Beside them the bare bus's sequential publishes per second through the
  same delay (1 / round trip), and for every run: items shown, shown more than once, and whether
  each consultation's items were shown in the order they were queued (timetoken order).

Everything is real: the relay enforcing Access Manager, clinic tokens, encryption, the agents
of ``telehealth_devstack.demo.cast`` with their durable outbox and audit trail.

    .venv/bin/python scripts/bench_durability.py [--messages 300] [--queued 500] [--appends 500]
        [--burst 60] [--consultations 10] [--delay-ms 300] [--in-flight 1 --in-flight default]
        [--only slow-link] [--state-dir DIR]
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
from typing import Any

from bench_consultation import BarePair as LatencyPair  # scripts/ is on the path when a script runs

from telehealth_client import events, logs
from telehealth_client.audit.trail import AuditTrail, ChainKeys, audit_event
from telehealth_client.consultation.chat import ConsultationChat
from telehealth_client.consultation.session import now
from telehealth_client.durable.at_rest import Sealer
from telehealth_client.durable.outbox import DEFAULT_MAX_IN_FLIGHT, Outbox, Outgoing
from telehealth_client.protocol.messages import ChatMessage, ConsultationState, encode
from telehealth_client.pubsub.bus import ConnectionStatus, Envelope
from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus
from telehealth_devstack.demo.cast import APPOINTMENT, CONSULTATION, DEPARTMENT, PATIENT, PROVIDER, Cast
from telehealth_devstack.demo.witness import Witness
from telehealth_devstack.network import CuttableLink
from telehealth_devstack.relay import Relay

WAIT_SECONDS = 30.0
WARM_UP = 10  # samples of each kind dropped before measuring (first requests open connections)
BARE_PATIENT = "pat-bare"
RATE_PUBLISHES = 200  # sequential bare publishes per rate measurement
TEXT = "Benchmark message: a chat line of ordinary length, about as long as a patient writes."
TARGETS = {
    "chat_send_to_display_p50_ms": 10.0,
    "outbox_drain_seconds": 5.0,
    "audit_appends_per_second": 200.0,
    "outbox_slow_link_messages_per_second": 20.0,
}
SLOW_PUBLISH_KEY, SLOW_SUBSCRIBE_KEY, SLOW_SECRET_KEY = "pub-c-slow", "sub-c-slow", "sec-c-slow"
SLOW_CIPHER_KEY = "bench-durability-slow-link-key"
SLOW_SENDER = "pat-slow"
SLOW_BARE_PUBLISHES = 10


def stats(samples_ms: list[float]) -> dict[str, float | int]:
    ordered = sorted(samples_ms)
    return {
        "p50": round(statistics.median(ordered), 3),
        "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        "min": round(ordered[0], 3),
        "max": round(ordered[-1], 3),
        "n": len(ordered),
    }


class BarePair(LatencyPair):
    """bench_consultation's bare pair (publish-to-handler latency), and the bare bus's publish rate."""

    async def publishes_per_second(self, count: int = RATE_PUBLISHES) -> float:
        """Sequential awaited publishes (each answered by the relay), per second."""
        started = time.perf_counter()
        for _ in range(count):
            await self.sender.publish(self.channel, chat_payload())
        return count / (time.perf_counter() - started)


def chat_payload() -> dict[str, Any]:
    message = ChatMessage(
        id=str(uuid.uuid4()), sender_id=BARE_PATIENT, sender_role="patient", text=TEXT, sent_at=now()
    )
    return encode(message)


def added(message_id: str) -> Any:
    return lambda e: isinstance(e, events.ChatMessageAdded) and e.message_id == message_id


async def consultation_in_progress(cast: Cast) -> ConsultationChat:
    """The demo's consultation, checked in, joined and started: the patient's chat."""
    provider, patient = cast.witnesses["provider"], cast.witnesses["patient"]

    def state(target: ConsultationState) -> Any:
        return lambda e: (
            isinstance(e, events.StateChanged) and e.consultation_id == CONSULTATION and e.state is target
        )

    await cast.kiosk_clinic.record_consent(PATIENT, True, None)
    await cast.patient.check_in(
        appointment_id=APPOINTMENT, patient_id=PATIENT, provider_id=PROVIDER, department_id=DEPARTMENT
    )
    await asyncio.wait_for(provider.seen(state(ConsultationState.CHECKED_IN)), WAIT_SECONDS)
    await cast.provider.join(CONSULTATION)
    await asyncio.wait_for(patient.seen(state(ConsultationState.CONNECTING)), WAIT_SECONDS)
    await cast.provider.start_consultation(CONSULTATION)
    await asyncio.wait_for(patient.seen(state(ConsultationState.IN_PROGRESS)), WAIT_SECONDS)
    chat = cast.patient.chat
    assert chat is not None, "the patient endpoint keeps no chat"
    return chat


async def chat_latency(
    chat: ConsultationChat, provider: Witness, bare: BarePair, messages: int
) -> tuple[list[float], list[float], list[float]]:
    """(send to display, send returned, bare publish to handler), in ms."""
    chat_ms: list[float] = []
    returns_ms: list[float] = []
    bare_ms: list[float] = []
    for n in range(messages + WARM_UP):
        bare_sample = await bare.sample(chat_payload())
        mark = provider.mark()
        started = time.perf_counter()
        entry = await chat.send(TEXT)
        returned = time.perf_counter()
        sighting = await asyncio.wait_for(provider.seen(added(entry.id), after=mark), WAIT_SECONDS)
        if n >= WARM_UP:
            bare_ms.append(bare_sample)
            chat_ms.append((sighting.at - started) * 1000)
            returns_ms.append((returned - started) * 1000)
    return chat_ms, returns_ms, bare_ms


async def outbox_drain(
    chat: ConsultationChat, provider: Witness, hop: CuttableLink, queued: int
) -> dict[str, Any]:
    """Queue ``queued`` messages with the kiosk's link cut; restore it; time the far end's view."""
    mark = provider.mark()
    hop.cut()
    started = time.perf_counter()
    ids = [(await chat.send(TEXT)).id for _ in range(queued)]
    queue_seconds = time.perf_counter() - started
    restored = time.perf_counter()
    hop.restore()
    last = restored
    for message_id in ids:
        sighting = await asyncio.wait_for(provider.seen(added(message_id), after=mark), WAIT_SECONDS * 4)
        last = max(last, sighting.at)
    wanted = set(ids)
    shown = [
        sighting.event.message_id
        for sighting in provider.sightings(after=mark)
        if isinstance(sighting.event, events.ChatMessageAdded) and sighting.event.message_id in wanted
    ]
    drain = last - restored
    return {
        "queued": queued,
        "queue_seconds": round(queue_seconds, 3),
        "drain_seconds": round(drain, 3),
        "messages_per_second": round(queued / drain, 1) if drain > 0 else None,
        "arrived": len(set(shown)),
        "shown_more_than_once": len(shown) - len(set(shown)),
    }


async def audit_appends(state_dir: Path, organization_id: str, appends: int) -> dict[str, float]:
    """Records per second on a trail of its own (no sink, no bus: the append alone)."""
    trail = AuditTrail(
        state_dir,
        keys=ChainKeys("bench-durability-device-credential"),
        device_id=PATIENT,
        organization_id=organization_id,
        sink=None,
    )
    await trail.open()

    def event() -> Any:
        return audit_event(
            "PHI_MESSAGE_SENT",
            organization_id=organization_id,
            actor_id=PATIENT,
            actor_role="patient",
            resource_type="chat-message",
            resource_id=str(uuid.uuid4()),
            channel=CONSULTATION,
            action="send",
            metadata={"sessionId": CONSULTATION},
        )

    try:
        for _ in range(WARM_UP):
            await trail.record(event())
        started = time.perf_counter()
        for _ in range(appends):
            await trail.record(event())
        sequential = appends / (time.perf_counter() - started)
        batch = [event() for _ in range(appends)]
        started = time.perf_counter()
        await asyncio.gather(*(trail.record(e) for e in batch))
        concurrent = appends / (time.perf_counter() - started)
        records = trail.status().records
    finally:
        await trail.aclose()
    if records != WARM_UP + 2 * appends:
        raise RuntimeError(f"audit trail holds {records} records, expected {WARM_UP + 2 * appends}")
    return {
        "sequential_per_second": round(sequential, 1),
        "concurrent_per_second": round(concurrent, 1),
        "n": appends,
    }


class SlowLink:
    """A relay of its own delaying every request, a sender's bus and a subscriber's on it."""

    def __init__(self, delay: float, consultations: int) -> None:
        self.delay = delay
        self.channels = [f"consultation.dr-slow.pat-slow-{n}" for n in range(consultations)]
        self.relay = Relay(
            publish_key=SLOW_PUBLISH_KEY, subscribe_key=SLOW_SUBSCRIBE_KEY, secret_key=SLOW_SECRET_KEY
        )
        self.sender: PubNubBus | None = None
        self.watcher: PubNubBus | None = None
        self.shown: list[Envelope] = []
        self._changed = asyncio.Event()

    def bus(self, user_id: str) -> PubNubBus:
        return PubNubBus(
            BusConfig(
                user_id=user_id,
                subscribe_key=SLOW_SUBSCRIBE_KEY,
                publish_key=SLOW_PUBLISH_KEY,
                origin=self.relay.origin,
                ssl=False,
                cipher_key=SLOW_CIPHER_KEY,
                request_timeout_seconds=10.0,
            )
        )

    async def start(self) -> None:
        await self.relay.start()
        self.sender, self.watcher = self.bus(SLOW_SENDER), self.bus("dr-slow")
        connected = asyncio.Event()
        stop_listening = self.watcher.add_status_listener(
            lambda change: connected.set() if change.status is ConnectionStatus.CONNECTED else None
        )
        try:
            await self.watcher.subscribe(self.channels, self._on_message)
            # Connected before anything is published: the subscriber misses nothing.
            await asyncio.wait_for(connected.wait(), WAIT_SECONDS)
        finally:
            stop_listening()
        self.relay.set_delay(self.delay)

    def _on_message(self, envelope: Envelope) -> None:
        self.shown.append(envelope)
        self._changed.set()

    async def wait_shown(self, count: int) -> None:
        while len(self.shown) < count:
            self._changed.clear()
            await self._changed.wait()

    async def aclose(self) -> None:
        for bus in (self.sender, self.watcher):
            if bus is not None:
                await bus.aclose()
        await self.relay.stop()

    async def bare_publishes_per_second(self, count: int = SLOW_BARE_PUBLISHES) -> float:
        """Sequential awaited publishes through the delay: one round trip each."""
        assert self.sender is not None
        channel = "consultation.dr-slow.bare"
        started = time.perf_counter()
        for _ in range(count):
            await self.sender.publish(channel, chat_payload())
        return count / (time.perf_counter() - started)

    async def drain(
        self, state_dir: Path, in_flight: int | None, burst: int, consultations: int
    ) -> dict[str, Any]:
        """``burst`` items round-robin over the first ``consultations`` channels, queued detached,
        then attached: until acknowledged, and until shown."""
        assert self.sender is not None
        options: dict[str, Any] = {} if in_flight is None else {"max_in_flight": in_flight}
        outbox = Outbox(
            state_dir / f"slow-{uuid.uuid4()}.sqlite3",
            Sealer(SLOW_CIPHER_KEY, purpose="outbox"),
            backoff_min_seconds=0.05,
            backoff_max_seconds=0.5,
            **options,
        )
        await outbox.open()
        try:
            items: list[Outgoing] = []
            for n in range(burst):
                channel = self.channels[n % consultations]
                message = chat_payload()
                items.append(Outgoing(message["id"], channel, channel, message))
            for item in items:
                await outbox.put(item)
            self.shown.clear()
            started = time.perf_counter()
            outbox.attach(self.sender)
            if not await outbox.wait_drained(WAIT_SECONDS * 20):
                raise RuntimeError("the outbox did not drain")
            acknowledged = time.perf_counter() - started
            await asyncio.wait_for(self.wait_shown(burst), WAIT_SECONDS)
            shown_after = time.perf_counter() - started
        finally:
            await outbox.aclose()
        shown_ids = [envelope.message.get("id") for envelope in self.shown]
        order_kept = all(
            [e.message.get("id") for e in sorted(self.shown, key=lambda e: e.timetoken) if e.channel == c]
            == [item.id for item in items if item.channel == c]
            for c in self.channels[:consultations]
        )
        return {
            "in_flight": f"default ({DEFAULT_MAX_IN_FLIGHT})" if in_flight is None else in_flight,
            "consultations": consultations,
            "messages": burst,
            "drained_seconds": round(acknowledged, 3),
            "messages_per_second": round(burst / acknowledged, 1),
            "shown_seconds": round(shown_after, 3),
            "shown_per_second": round(burst / shown_after, 1),
            "shown": len(set(shown_ids)),
            "shown_more_than_once": len(shown_ids) - len(set(shown_ids)),
            "order_kept_per_consultation": order_kept,
        }


async def outbox_slow_link(
    state_dir: Path, delay: float, burst: int, consultations: int, in_flights: list[int | None]
) -> dict[str, Any]:
    link = SlowLink(delay, consultations)
    try:
        await link.start()
        bare_rate = await link.bare_publishes_per_second()
        runs = []
        for in_flight in in_flights:
            for spread in (1, consultations):
                runs.append(await link.drain(state_dir, in_flight, burst, spread))
    finally:
        await link.aclose()
    return {
        "delay_ms": round(delay * 1000),
        "bare_bus_sequential_publishes_per_second": round(bare_rate, 2),
        "runs": runs,
    }


def slow_link_targets(slow: dict[str, Any]) -> dict[str, Any]:
    """The target across consultations with the outbox's own limit, every run exactly once and in order."""
    target = TARGETS["outbox_slow_link_messages_per_second"]
    best = max(
        (run for run in slow["runs"] if run["consultations"] > 1),
        key=lambda run: run["messages_per_second"],
        default=None,
    )
    correct = all(
        run["shown"] == run["messages"]
        and run["shown_more_than_once"] == 0
        and run["order_kept_per_consultation"]
        for run in slow["runs"]
    )
    measured = None if best is None else best["messages_per_second"]
    return {
        "target": f">= {target:g} behind {slow['delay_ms']} ms, across consultations, exactly once, in order",
        "measured": measured,
        "met": measured is not None and measured >= target and correct,
    }


async def bench(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    slow = await outbox_slow_link(
        state_dir, args.delay_ms / 1000, args.burst, args.consultations, args.in_flight
    )
    if args.only == "slow-link":
        return {"outbox_slow_link": slow, "targets": {"outbox_slow_link": slow_link_targets(slow)}}
    messages, queued, appends = args.messages, args.queued, args.appends
    cast = Cast(state_dir / "agents", media=False)
    hop: CuttableLink | None = None
    try:
        await cast.start_stack()
        hop = CuttableLink(cast.stack.relay.origin)
        await hop.start()
        await cast.start_agents(patient_origin=hop.origin)
        bare = await BarePair.open(cast, WAIT_SECONDS)
        chat = await consultation_in_progress(cast)
        provider = cast.witnesses["provider"]
        chat_ms, returns_ms, bare_ms = await chat_latency(chat, provider, bare, messages)
        drain_bare_rate = await bare.publishes_per_second()
        drain = await outbox_drain(chat, provider, hop, queued)
        audit_bare_rate = await bare.publishes_per_second()
        audit = await audit_appends(state_dir / "audit-bench", cast.stack.organization_id, appends)
    finally:
        await cast.aclose()
        if hop is not None:
            await hop.aclose()
    chat_p50 = statistics.median(chat_ms)
    return {
        "chat_send_to_display_ms": stats(chat_ms),
        "chat_send_returns_ms": stats(returns_ms),
        "bare_bus_publish_to_handler_ms": stats(bare_ms),
        "outbox_drain": {**drain, "bare_bus_publishes_per_second": round(drain_bare_rate, 1)},
        "audit_appends": {**audit, "bare_bus_publishes_per_second": round(audit_bare_rate, 1)},
        "outbox_slow_link": slow,
        "targets": {
            "chat_send_to_display_p50_ms": {
                "target": f"< {TARGETS['chat_send_to_display_p50_ms']:g}",
                "measured": round(chat_p50, 3),
                "met": chat_p50 < TARGETS["chat_send_to_display_p50_ms"],
            },
            "outbox_drain_seconds": {
                "target": f"< {TARGETS['outbox_drain_seconds']:g} for {queued}",
                "measured": drain["drain_seconds"],
                "met": drain["drain_seconds"] < TARGETS["outbox_drain_seconds"]
                and drain["arrived"] == queued
                and drain["shown_more_than_once"] == 0,
            },
            "audit_appends_per_second": {
                "target": f">= {TARGETS['audit_appends_per_second']:g}, every record flushed",
                "measured": audit["sequential_per_second"],
                "met": audit["sequential_per_second"] >= TARGETS["audit_appends_per_second"],
            },
            "outbox_slow_link": slow_link_targets(slow),
        },
    }


def in_flight_limit(text: str) -> int | None:
    """``--in-flight``: a positive number, or ``default`` for the outbox's own limit (None)."""
    if text == "default":
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 or 'default'")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--messages", type=int, default=300, help="chat (and bare) latency samples")
    parser.add_argument("--queued", type=int, default=500, help="chat messages queued during the outage")
    parser.add_argument("--appends", type=int, default=500, help="audit records per rate measurement")
    parser.add_argument(
        "--state-dir", type=Path, help="where the outboxes and audit trails live (default: a temporary one)"
    )
    parser.add_argument("--burst", type=int, default=60, help="items queued per slow-link run")
    parser.add_argument("--consultations", type=int, default=10, help="consultations of the spread run")
    parser.add_argument("--delay-ms", type=float, default=300.0, help="the slow link's delay per request")
    parser.add_argument(
        "--in-flight",
        type=in_flight_limit,
        action="append",
        help="the outbox's limit of publishes in flight, once per run (default: 1, then the outbox's own)",
    )
    parser.add_argument("--only", choices=["slow-link"], help="measure the slow link alone")
    args = parser.parse_args()
    if args.messages < 1 or args.queued < 1 or args.appends < 1 or args.burst < 1:
        parser.error("--messages, --queued, --appends and --burst must be at least 1")
    if args.consultations < 2 or args.delay_ms < 0:
        parser.error("--consultations must be at least 2 and --delay-ms at least 0")
    if args.in_flight is None:
        args.in_flight = [1, None]
    # Logs on stderr, so stdout is the JSON alone.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logs.quiet_url_loggers()
    with tempfile.TemporaryDirectory(prefix="telehealth-bench-", dir=args.state_dir) as directory:
        results = asyncio.run(bench(args, Path(directory)))
    # Every outbox put and audit record is fsync'ed: the disk under the state directory is part
    # of the result, so name it.
    results["state_dir_parent"] = str(args.state_dir or tempfile.gettempdir())
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
