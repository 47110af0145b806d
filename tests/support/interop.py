"""The interop tests' helpers: real PubNubBus clients and the real PubNub JavaScript SDK in Node
(tests/js/peer.mjs) as the provider's browser app, spoken to in JSON lines."""

from __future__ import annotations

import asyncio
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
from telehealth_devstack.stack import DevStack
from tests.support.child import Child

PUBLISH_KEY = "pub-c-interop-test"


SUBSCRIBE_KEY = "sub-c-interop-test"


SECRET_KEY = "sec-c-interop-test"


CIPHER_KEY = "interop-test-cipher-key"


STEP = 15.0  # seconds; the bound on one step of the consultation on a busy machine
WAIT = 4.0  # seconds; the bound on anything that should happen at once (a busy 2-core machine)


JS_DIR = Path(__file__).resolve().parents[1] / "js"


PEER_SCRIPT = JS_DIR / "peer.mjs"


PROVIDER_SCRIPT = JS_DIR / "provider.mjs"


BROWSER_SCRIPT = JS_DIR / "browser.mjs"  # headless Chromium driven by Playwright, one page per call


CHROMIUM = "/usr/bin/chromium"  # Debian's


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


class JsPeer(Child[Event]):
    """The PubNub JavaScript SDK (or the browser driver) in a Node child, driven over JSON lines:
    each stdout line is an event; each command, a line on its stdin, is answered by a ``result`` or
    an ``error`` event carrying the command's id."""

    line_timeout = WAIT
    finish_timeout = 2.0  # seconds for the peer to leave once its stdin closes, then it is killed
    line_limit = 1024 * 1024  # one event per line; a fetch answer with offers in it is long

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        super().__init__(process)
        self._next_id = 0

    def parse(self, raw: bytes) -> Event:
        event: Event = json.loads(raw)
        return event

    @property
    def events(self) -> list[Event]:
        """Every event it wrote so far, in order."""
        return self.lines

    async def event(self, predicate: Callable[[Event], bool], within: float = WAIT) -> Event:
        """The first event (seen so far or still to come) for which ``predicate`` holds."""
        try:
            return await self.wait_line(predicate, within)
        except TimeoutError:
            seen = [e.get("event") for e in self.lines]
            raise AssertionError(f"no such event from the Node peer within {within}s; saw {seen}") from None

    async def call(self, op: str, within: float = WAIT, **fields: Any) -> Event:
        """Send a command and wait for its answer: a ``result`` or an ``error`` event."""
        self._next_id += 1
        request_id = self._next_id
        await self.write(json.dumps({"op": op, "id": request_id, **fields}).encode() + b"\n")
        return await self.event(lambda e: e.get("id") == request_id, within)

    async def subscribe(self, channels: list[str], *, with_presence: bool = False) -> Event:
        """Subscribe and wait for the SDK's connected status."""
        await self.call("subscribe", channels=channels, withPresence=with_presence)
        return await self.event(lambda e: e["event"] == "status" and e["category"] == "PNConnectedCategory")

    async def close(self) -> None:
        """End the peer: it leaves when its stdin closes (killed when it does not in time)."""
        await self.stop()


PeerFactory = Callable[..., Awaitable[JsPeer]]


async def start_node(node: str, script: Path, env: dict[str, str]) -> JsPeer:
    """``script`` in Node with only ``env`` (and PATH): configuration never goes on the command line."""
    return await JsPeer.spawn(
        node, script, cwd=JS_DIR, env={"PATH": os.environ.get("PATH", ""), **env}, stdin=True
    )


JS_PROVIDER = "dr-rivera"  # the provider app on the JS SDK; a provider in the stack's directory


PAGE_ORIGIN = "http://127.0.0.1:8765"  # where the provider page would be served: not the clinic's origin


class ProviderPage:
    """One provider call page in the module's browser."""

    def __init__(self, driver: JsPeer, number: int) -> None:
        self.driver = driver
        self.number = number

    @classmethod
    async def open(cls, browser: JsPeer) -> ProviderPage:
        """A new page in the browser driver."""
        opened = await browser.call("open", within=STEP)
        assert opened["event"] == "result", opened
        return cls(browser, opened["page"])

    async def start(self, stack: DevStack, **options: Any) -> Any:
        """Start the call page as ``JS_PROVIDER`` with the settings of its cart on ``stack`` (it
        fetches its standing token and TURN credentials, then starts the SDK); ``options``: more
        start options. Its answer."""
        return await self.run("start", **stack.call_page_settings(JS_PROVIDER), **options)

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
