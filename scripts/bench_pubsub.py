"""Pub/sub benchmark through the development relay, with the real PubNub SDK on both ends.

Prints JSON: publish-to-handler latency (p50/p95/max, ms) and messages per second for
our bus (encrypted, as the agent runs) and for the raw SDK (its own subscribe loop and
listener, no crypto) as a baseline, then the same for 50 subscribers at once.

    .venv/bin/python scripts/bench_pubsub.py [--messages 300] [--subscribers 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from pubnub.callbacks import SubscribeCallback
from pubnub.pnconfiguration import PNConfiguration
from pubnub.pubnub_asyncio import PubNubAsyncio

from telehealth_client.pubsub.bus import ConnectionStatus, Envelope, StatusChange
from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus
from telehealth_devstack.relay import Relay

KEYS = {"publish_key": "pub-c-bench", "subscribe_key": "sub-c-bench", "secret_key": "sec-c-bench"}
CHANNEL = "consultation.dr-bench.patient-bench"


def summary(latencies_ms: list[float], count: int, seconds: float) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
        "max_ms": round(ordered[-1], 3),
        "messages_per_second": round(count / seconds, 1),
        "deliveries": len(ordered),
    }


class Collector:
    """Records receive times of messages stamped with their send time; wakes the bench when done."""

    def __init__(self, expected: int) -> None:
        self.latencies: list[float] = []
        self.expected = expected
        self.done = asyncio.Event()

    def record(self, message: Any) -> None:
        self.latencies.append((time.perf_counter() - float(message["sent"])) * 1000)
        if len(self.latencies) >= self.expected:
            self.done.set()


def bus(relay: Relay, user_id: str) -> PubNubBus:
    return PubNubBus(
        BusConfig(
            user_id=user_id,
            subscribe_key=KEYS["subscribe_key"],
            publish_key=KEYS["publish_key"],
            origin=relay.origin,
            ssl=False,
            cipher_key="bench-cipher-key",
        )
    )


async def connected(target: PubNubBus, channel: str, handler: Callable[[Envelope], None]) -> None:
    ready = asyncio.Event()

    def on_status(change: StatusChange) -> None:
        if change.status == ConnectionStatus.CONNECTED:
            ready.set()

    target.add_status_listener(on_status)
    await target.subscribe([channel], handler)
    await asyncio.wait_for(ready.wait(), 10)


async def bench_bus(relay: Relay, messages: int, subscribers: int) -> dict[str, float]:
    publisher = bus(relay, "dr-bench")
    receivers = [bus(relay, f"receiver-{n}") for n in range(subscribers)]
    collector = Collector(messages * subscribers)
    try:
        for receiver in receivers:
            await connected(receiver, CHANNEL, lambda env: collector.record(env.message))
        started = time.perf_counter()
        for n in range(messages):
            await publisher.publish(CHANNEL, {"n": n, "sent": time.perf_counter()})
        await asyncio.wait_for(collector.done.wait(), 60)
        return summary(collector.latencies, messages, time.perf_counter() - started)
    finally:
        await asyncio.gather(publisher.aclose(), *(r.aclose() for r in receivers))


def raw_sdk(relay: Relay, user_id: str) -> PubNubAsyncio:
    config = PNConfiguration()
    config.user_id = user_id
    config.publish_key = KEYS["publish_key"]
    config.subscribe_key = KEYS["subscribe_key"]
    config.origin = relay.origin
    config.ssl = False
    return PubNubAsyncio(config)


class RawListener(SubscribeCallback):  # type: ignore[misc]
    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.connected = asyncio.Event()

    def status(self, pubnub: Any, status: Any) -> None:
        if not status.is_error():
            self.connected.set()

    def message(self, pubnub: Any, message: Any) -> None:
        self.collector.record(message.message)


async def bench_raw(relay: Relay, messages: int, subscribers: int) -> dict[str, float]:
    publisher = raw_sdk(relay, "dr-bench")
    receivers = [raw_sdk(relay, f"raw-{n}") for n in range(subscribers)]
    collector = Collector(messages * subscribers)
    try:
        for receiver in receivers:
            listener = RawListener(collector)
            receiver.add_listener(listener)
            receiver.subscribe().channels([CHANNEL]).execute()
            await asyncio.wait_for(listener.connected.wait(), 10)
        started = time.perf_counter()
        for n in range(messages):
            await publisher.publish().channel(CHANNEL).message({"n": n, "sent": time.perf_counter()}).future()
        await asyncio.wait_for(collector.done.wait(), 60)
        return summary(collector.latencies, messages, time.perf_counter() - started)
    finally:
        for receiver in receivers:
            receiver.unsubscribe_all()
        await asyncio.gather(publisher.stop(), *(r.stop() for r in receivers))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--subscribers", type=int, default=50)
    args = parser.parse_args()
    results: dict[str, Any] = {"messages": args.messages}
    async with Relay(**KEYS) as relay:
        results["bus_one_subscriber"] = await bench_bus(relay, args.messages, 1)
        results["raw_sdk_one_subscriber"] = await bench_raw(relay, args.messages, 1)
        fanout_messages = max(20, args.messages // 10)
        results["fanout_messages"] = fanout_messages
        results[f"bus_{args.subscribers}_subscribers"] = await bench_bus(
            relay, fanout_messages, args.subscribers
        )
        results[f"raw_sdk_{args.subscribers}_subscribers"] = await bench_raw(
            relay, fanout_messages, args.subscribers
        )
    results["target"] = "bus p50 under 5 ms through the relay"
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
