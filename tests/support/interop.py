"""The interop tests' helpers: real PubNubBus clients and the real PubNub JavaScript SDK in Node
(tests/js/peer.mjs) as the provider's browser app, spoken to in JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pubnub.models.consumer.v3.channel import Channel

from telehealth_client.pubsub.bus import ConnectionStatus, Envelope, PresenceEvent, StatusChange
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_devstack.relay import Relay
from telehealth_devstack.relay.client import sdk_client

PUBLISH_KEY = "pub-c-interop-test"


SUBSCRIBE_KEY = "sub-c-interop-test"


SECRET_KEY = "sec-c-interop-test"


CIPHER_KEY = "interop-test-cipher-key"


STEP = 15.0  # seconds; the bound on one step of the consultation on a busy machine
WAIT = 4.0  # seconds; the bound on anything that should happen at once (a busy 2-core machine)


JS_DIR = Path(__file__).resolve().parents[1] / "js"


PEER_SCRIPT = JS_DIR / "peer.mjs"


PROVIDER_SCRIPT = JS_DIR / "provider.mjs"


MIN_NODE = (22, 0, 0)


Event = dict[str, Any]


T = TypeVar("T")


BusFactory = Callable[..., PubNubBus]


class Inbox:
    """What a bus subscription delivered: messages and presence events, awaitable by predicate."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []
        self.presence: list[PresenceEvent] = []
        self._changed = asyncio.Condition()

    async def on_message(self, envelope: Envelope) -> None:
        async with self._changed:
            self.messages.append(envelope)
            self._changed.notify_all()

    async def on_presence(self, event: PresenceEvent) -> None:
        async with self._changed:
            self.presence.append(event)
            self._changed.notify_all()

    async def message(self, predicate: Callable[[Envelope], bool], within: float = WAIT) -> Envelope:
        return await self._first(self.messages, predicate, within)

    async def presence_event(
        self, predicate: Callable[[PresenceEvent], bool], within: float = WAIT
    ) -> PresenceEvent:
        return await self._first(self.presence, predicate, within)

    async def _first(self, items: list[T], predicate: Callable[[T], bool], within: float) -> T:
        async def found() -> T:
            async with self._changed:
                await self._changed.wait_for(lambda: any(predicate(item) for item in items))
                return next(item for item in items if predicate(item))

        return await asyncio.wait_for(found(), within)


async def connected(bus: PubNubBus, channels: list[str], inbox: Inbox, *, presence: bool = True) -> None:
    """Subscribe and return once the bus's long-poll is up, so that later publishes reach it.

    ``presence``: also subscribe to the channels' ``-pnpres`` channels (a token must cover them).
    """
    up = asyncio.Event()

    def watch(change: StatusChange) -> None:
        if change.status == ConnectionStatus.CONNECTED:
            up.set()

    remove = bus.add_status_listener(watch)
    try:
        await bus.subscribe(channels, inbox.on_message, on_presence=inbox.on_presence if presence else None)
        await asyncio.wait_for(up.wait(), WAIT)
    finally:
        remove()


async def grant_token(
    relay: Relay, user_id: str, *, read_write: Sequence[str], read: Sequence[str] = ()
) -> str:
    """An Access Manager token minted by the Python SDK's ``grant_token``, signed with the secret key."""
    admin = sdk_client(relay, user_id="clinic", with_secret_key=True)
    try:
        channels = [Channel.id(c).read().write() for c in read_write] + [Channel.id(c).read() for c in read]
        result = await admin.grant_token(channels=channels, ttl=15, authorized_user_id=user_id).result()
        token: str = result.token
        return token
    finally:
        await admin.stop()


class JsPeer:
    """The PubNub JavaScript SDK in a Node subprocess, driven over JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._stderr = bytearray()
        self._next_id = 0
        self._readers = [
            asyncio.create_task(self._read_stdout(), name="js-peer-stdout"),
            asyncio.create_task(self._read_stderr(), name="js-peer-stderr"),
        ]

    async def _read_stdout(self) -> None:
        assert self._process.stdout is not None
        async for line in self._process.stdout:
            event = json.loads(line)
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        async with self._changed:
            self.events.append({"event": "exited"})
            self._changed.notify_all()

    async def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        async for line in self._process.stderr:
            self._stderr.extend(line)
            del self._stderr[:-4000]  # the tail is enough to say why it failed

    async def event(self, predicate: Callable[[Event], bool], within: float = WAIT) -> Event:
        """The first event (seen so far or still to come) for which ``predicate`` holds."""

        def match() -> Event | None:
            for event in self.events:
                if predicate(event):
                    return event
                if event["event"] == "exited":
                    raise AssertionError(f"the Node peer exited; stderr: {self._stderr.decode()[-2000:]}")
            return None

        async def found() -> Event:
            async with self._changed:
                await self._changed.wait_for(lambda: match() is not None)
                event = match()
                assert event is not None
                return event

        try:
            return await asyncio.wait_for(found(), within)
        except TimeoutError:
            seen = [e.get("event") for e in self.events]
            raise AssertionError(f"no such event from the Node peer within {within}s; saw {seen}") from None

    async def call(self, op: str, within: float = WAIT, **fields: Any) -> Event:
        """Send a command and wait for its answer: a ``result`` or an ``error`` event."""
        assert self._process.stdin is not None
        self._next_id += 1
        request_id = self._next_id
        self._process.stdin.write(json.dumps({"op": op, "id": request_id, **fields}).encode() + b"\n")
        await self._process.stdin.drain()
        return await self.event(lambda e: e.get("id") == request_id, within)

    async def subscribe(self, channels: list[str], *, with_presence: bool = False) -> Event:
        """Subscribe and wait for the SDK's connected status."""
        await self.call("subscribe", channels=channels, withPresence=with_presence)
        return await self.event(lambda e: e["event"] == "status" and e["category"] == "PNConnectedCategory")

    async def close(self) -> None:
        process = self._process
        if process.returncode is None and process.stdin is not None:
            with contextlib.suppress(ConnectionError):
                process.stdin.close()  # the peer leaves when its stdin closes
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 2.0)
        if process.returncode is None:
            process.kill()
            await process.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)


PeerFactory = Callable[..., Awaitable[JsPeer]]


async def start_node(node: str, script: Path, env: dict[str, str]) -> JsPeer:
    """``script`` in Node with only ``env`` (and PATH): configuration never goes on the command line."""
    process = await asyncio.create_subprocess_exec(
        node,
        str(script),
        cwd=JS_DIR,
        env={"PATH": os.environ.get("PATH", ""), **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        limit=1024 * 1024,  # one event per line; a fetch answer with offers in it is long
    )
    return JsPeer(process)


JS_PROVIDER = "dr-rivera"  # the provider app on the JS SDK; a provider in the stack's directory


PAGE_ORIGIN = "http://127.0.0.1:8765"  # where the provider page would be served: not the clinic's origin


class ProviderPage:
    """One provider call page in the module's browser."""

    def __init__(self, driver: JsPeer, number: int) -> None:
        self.driver = driver
        self.number = number

    async def run(self, method: str, within: float = STEP, **args: Any) -> Any:
        answer = await self.driver.call("run", within=within, page=self.number, method=method, args=args)
        assert answer["event"] == "result", answer
        return answer["value"]

    async def event(self, name: str, within: float = STEP, **fields: Any) -> Event:
        return await self.driver.event(
            lambda e: (
                e.get("page") == self.number
                and e["event"] == name
                and all(e.get(k) == v for k, v in fields.items())
            ),
            within,
        )

    def events(self, name: str) -> list[Event]:
        return [e for e in self.driver.events if e.get("page") == self.number and e["event"] == name]

    async def close(self) -> None:
        await self.driver.call("close", page=self.number)


PATIENT = "pat-js-1"


DEPARTMENT = "er"


CONSULTATION = f"consultation.{JS_PROVIDER}.{PATIENT}"


SENDER_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")  # what senders write


def appointment() -> str:
    """A recognisable appointment ID: it travels only inside encrypted messages."""
    return f"appt-{uuid.uuid4().hex[:20]}"


def app_event(name: str, **fields: Any) -> Any:
    return lambda e: e["event"] == name and all(e.get(k) == v for k, v in fields.items())


async def click(provider: JsPeer, op: str, **fields: Any) -> Event:
    answer = await provider.call(op, within=STEP, **fields)
    assert answer["event"] == "result", answer
    return answer
