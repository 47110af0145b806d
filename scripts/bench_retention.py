"""Retention benchmark: the state directory's size after months of consultations, with and without pruning.

Two kiosks' stores side by side on the development stack, fed the same simulated months: each
day ``--per-day`` consultations, each ``--events`` audit events (stamped with the simulated time,
posted to the clinic stand-in's audit sink, which acknowledges them), ``--chat`` chat messages
through the outbox (sealed, fsync'ed, published on the relay), and a provider's per-consultation
state file saved and removed at its end (its directory left, as the agent leaves it). One store is
never pruned; the other gets a retention pass (``retention_days`` 30) at the end of every day,
its clock moved a day on. Prints JSON:

- ``without_pruning`` and ``with_pruning``: the state directory on disk at rest (bytes in blocks,
  the stores closed) and each store's share (``audit``, ``outbox``, ``consultations``), the audit
  records kept in the file, ``audit_verify_seconds`` (``telehealth-agent audit verify``'s check
  of the store), and ``largest_running_bytes``, the largest seen at the end of a day with the
  stores open (write-ahead logs included); ``with_pruning`` adds a pass's duration (p50, max);
- ``ratio``: the pruned directory's size over the unpruned one's at the end (it falls as the
  months pass: the pruned one holds ``retention_days`` of them).

    .venv/bin/python scripts/bench_retention.py [--days 90] [--per-day 3] [--events 20] [--chat 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from telehealth_client.audit.trail import AuditTrail, ChainKeys, audit_event, verify_chain
from telehealth_client.consultation import state_file
from telehealth_client.consultation.lifecycle import Consultation
from telehealth_client.consultation.provider_sessions import CONSULTATIONS_DIR
from telehealth_client.durable.at_rest import Sealer
from telehealth_client.durable.outbox import Outbox, Outgoing
from telehealth_client.protocol.messages import ConsultationState
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.retention import DAY_SECONDS, Retention, RetentionPolicy
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.stack import DevStack

KIOSKS = ("kiosk-bench-kept", "kiosk-bench-pruned")
PROVIDER = "dr-bench"
WAIT_SECONDS = 60.0
TEXT = "Benchmark message: a chat line of ordinary length, about as long as a patient writes."


class SimulatedClock:
    """Seconds since the epoch, moved on a day at a time by the benchmark."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Store:
    """One kiosk's state directory: its audit trail (to the real sink), its outbox (to the relay)."""

    def __init__(self, stack: DevStack, device_id: str, root: Path, clock: SimulatedClock) -> None:
        assert stack.clinic is not None
        self.stack, self.device_id, self.clock = stack, device_id, clock
        self.state_dir = root / device_id
        self.consultations = self.state_dir / "consultation"
        self.keys = ChainKeys(stack.kiosk_credential(device_id))
        self.clinic = ClinicClient(stack.clinic.url, stack.kiosk_credential(device_id), timeout_seconds=10.0)
        self.trail = AuditTrail(
            self.state_dir,
            keys=self.keys,
            device_id=device_id,
            organization_id=stack.organization_id,
            sink=self.clinic,
        )
        self.outbox = Outbox(
            self.state_dir / "outbox.sqlite3", Sealer(stack.keys.cipher_key, purpose="outbox v1")
        )
        self.bus = PubNubBus(stack.bus_config(f"pat-{device_id}"))

    async def open(self) -> None:
        await self.trail.open()
        await self.outbox.open()
        self.outbox.attach(self.bus)

    async def consultation(self, number: int, events: int, chat: int) -> None:
        at = datetime.fromtimestamp(self.clock(), UTC)
        for index in range(events):
            event = audit_event(
                "PHI_MESSAGE_SENT",
                organization_id=self.stack.organization_id,
                actor_id=self.device_id,
                actor_role="patient",
                resource_type="device",
                resource_id=self.device_id,
                action="send",
                metadata={"sessionId": f"session-{number}", "index": index},
            )
            await self.trail.record(event.model_copy(update={"timestamp": at}))
        channel = f"consultation.{PROVIDER}.pt-{number}"
        for index in range(chat):
            item_id = f"{self.device_id}-{number}-{index}"
            message = {"type": "chat", "id": item_id, "senderId": f"pt-{number}", "text": TEXT}
            await self.outbox.put(Outgoing(item_id, channel, channel, message))
        directory = self.consultations / CONSULTATIONS_DIR / channel
        made = Consultation.new(consultation_id=channel, user_id=PROVIDER, role="provider")
        await asyncio.to_thread(
            state_file.save, directory, replace(made, state=ConsultationState.IN_PROGRESS)
        )
        await asyncio.to_thread(state_file.remove, directory)
        await asyncio.to_thread(os.utime, directory, (self.clock(), self.clock()))

    async def delivered(self) -> None:
        assert await self.trail.wait_delivered(WAIT_SECONDS), "the sink did not acknowledge in time"
        assert await self.outbox.wait_drained(WAIT_SECONDS), "the outbox did not drain in time"

    async def aclose(self) -> None:
        await self.outbox.aclose()
        await self.trail.aclose()
        await self.bus.aclose()
        await self.clinic.aclose()


def disk_bytes(path: Path) -> int:
    """What ``path`` takes on disk (blocks), a directory's content and the directories included."""
    if not path.is_dir():
        return path.lstat().st_blocks * 512 if path.exists() else 0
    total = 0
    for directory, names, files in os.walk(path):
        for name in [*names, *files]:
            total += os.lstat(Path(directory) / name).st_blocks * 512
    return total


def sizes(store: Store) -> dict[str, int]:
    audit = disk_bytes(store.state_dir / "audit")
    outbox = sum(disk_bytes(p) for p in store.state_dir.glob("outbox.sqlite3*"))
    consultations = disk_bytes(store.consultations)
    return {
        "total_bytes": disk_bytes(store.state_dir),
        "audit_bytes": audit,
        "outbox_bytes": outbox,
        "consultations_bytes": consultations,
        "consultation_directories": sum(1 for _ in (store.consultations / CONSULTATIONS_DIR).iterdir()),
    }


def verified(store: Store) -> dict[str, Any]:
    started = time.perf_counter()
    report = verify_chain(store.state_dir, store.keys, store.device_id)
    assert report.ok, report.reason
    return {
        "audit_records": report.records,
        "audit_records_in_file": report.records - report.pruned,
        "audit_verify_seconds": round(time.perf_counter() - started, 3),
    }


async def run(days: int, per_day: int, events: int, chat: int) -> dict[str, Any]:
    clock = SimulatedClock()
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as temporary:
        async with DevStack(providers=(PROVIDER,), kiosks=KIOSKS, enforce_access=False) as stack:
            kept, pruned = (Store(stack, device_id, Path(temporary), clock) for device_id in KIOSKS)
            for store in (kept, pruned):
                await store.open()
            retention = Retention(
                pruned.trail, pruned.outbox, pruned.consultations, RetentionPolicy(), clock=clock
            )
            passes: list[float] = []
            largest = {"without_pruning": 0, "with_pruning": 0}
            try:
                number = 0
                for _ in range(days):
                    for _ in range(per_day):
                        number += 1
                        await asyncio.gather(*(s.consultation(number, events, chat) for s in (kept, pruned)))
                    await asyncio.gather(kept.delivered(), pruned.delivered())
                    clock.now += DAY_SECONDS
                    started = time.perf_counter()
                    report = await retention.prune_now()
                    passes.append((time.perf_counter() - started) * 1000)
                    assert report.warning is None, report.warning
                    # Both open, their write-ahead logs included: what the disk holds while running.
                    for name, store in (("without_pruning", kept), ("with_pruning", pruned)):
                        largest[name] = max(largest[name], disk_bytes(store.state_dir))
            finally:
                await retention.aclose()
                for store in (kept, pruned):
                    await store.aclose()
            without, with_ = sizes(kept), sizes(pruned)
            return {
                "days": days,
                "consultations": number,
                "audit_events_per_consultation": events,
                "chat_per_consultation": chat,
                "retention_days": RetentionPolicy().days,
                "without_pruning": {
                    **without,
                    **verified(kept),
                    "largest_running_bytes": largest["without_pruning"],
                },
                "with_pruning": {
                    **with_,
                    **verified(pruned),
                    "largest_running_bytes": largest["with_pruning"],
                    "pass_ms": {
                        "p50": round(statistics.median(passes), 1),
                        "max": round(max(passes), 1),
                        "n": len(passes),
                    },
                },
                "ratio": round(with_["total_bytes"] / without["total_bytes"], 3),
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--per-day", type=int, default=3)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--chat", type=int, default=6)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    result = asyncio.run(run(arguments.days, arguments.per_day, arguments.events, arguments.chat))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
