"""The bus tests' helpers: what a real PubNubBus received (Inbox), its status changes
(StatusLog), a subscription that is known to be live, and the keys ``make_bus`` gives the buses it
builds (``BusKeys``: the bus tests' own, ``KEYS``; a folder with its own relay has its own)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pubnub.models.consumer.v3.channel import Channel

from telehealth_client.pubsub.bus import (
    ConnectionStatus,
    Envelope,
    StatusChange,
)
from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus, build_pubnub
from telehealth_devstack.relay import Relay
from tests.support.recorder import Recorder

PUBLISH_KEY = "pub-c-bus-test"


SUBSCRIBE_KEY = "sub-c-bus-test"


SECRET_KEY = "sec-c-bus-test"


CIPHER_KEY = "bus-test-cipher-key"


BusFactory = Callable[..., PubNubBus]


@dataclass(frozen=True)
class BusKeys:
    """The relay's publish and subscribe keys and the cipher key the buses encrypt with."""

    publish_key: str
    subscribe_key: str
    cipher_key: str


KEYS = BusKeys(PUBLISH_KEY, SUBSCRIBE_KEY, CIPHER_KEY)


class Inbox:
    """Collects envelopes (an async handler for the bus) and lets a test wait for a count."""

    def __init__(self) -> None:
        self._recorder = Recorder()
        self.items: list[Envelope] = self._recorder.items

    async def __call__(self, envelope: Envelope) -> None:
        self._recorder.add(envelope)

    async def wait_for(self, count: int, within: float = 10.0) -> list[Envelope]:
        await self._recorder.until(lambda: len(self.items) >= count, within)
        return list(self.items)


class StatusLog:
    def __init__(self, bus: PubNubBus) -> None:
        self._recorder = Recorder()
        self.changes: list[StatusChange] = self._recorder.items
        bus.add_status_listener(self._recorder.add)

    async def wait_for(
        self, status: ConnectionStatus, within: float = 10.0, *, after: int = 0
    ) -> StatusChange:
        """The latest change to ``status`` (among changes from index ``after`` on), waiting for one."""
        await self._recorder.until(lambda: any(c.status == status for c in self.changes[after:]), within)
        return next(c for c in reversed(self.changes[after:]) if c.status == status)

    def statuses(self) -> list[ConnectionStatus]:
        return [change.status for change in self.changes]


async def subscribed(bus: PubNubBus, channel: str, inbox: Inbox) -> StatusLog:
    """Subscribe and wait until the bus is connected, so later publishes are not missed."""
    log = StatusLog(bus)
    await bus.subscribe([channel], inbox)
    await log.wait_for(ConnectionStatus.CONNECTED)
    return log


async def grant(relay: Relay, user_id: str, channel: str) -> str:
    admin = build_pubnub(
        BusConfig(
            user_id="token-server",
            subscribe_key=SUBSCRIBE_KEY,
            publish_key=PUBLISH_KEY,
            secret_key=SECRET_KEY,
            origin=relay.origin,
            ssl=False,
        )
    )
    try:
        permissions = [Channel.id(channel).read().write(), Channel.id(channel + "-pnpres").read()]
        envelope = await admin.grant_token(channels=permissions, ttl=15, authorized_user_id=user_id).future()
        assert not envelope.is_error()
        return str(envelope.result.token)
    finally:
        await admin.stop()
