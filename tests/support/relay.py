"""The relay tests' helpers: raw requests, what a real SDK client received, and a live subscription."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from pubnub.callbacks import SubscribeCallback
from pubnub.enums import PNStatusCategory
from pubnub.models.consumer.v3.channel import Channel
from pubnub.models.consumer.v3.uuid import UUID
from pubnub.pubnub_asyncio import PubNubAsyncio

from telehealth_devstack.relay import Relay
from telehealth_devstack.relay.client import sdk_client

ClientFactory = Callable[..., PubNubAsyncio]


WAIT = 5.0  # seconds; the upper bound on waiting for something that should happen at once


async def raw_get(relay: Relay, target: str) -> tuple[int, Any]:
    """One GET on its own connection, answered as (status, decoded JSON).

    Raises ConnectionError when the relay closes the connection without answering. (aiohttp's
    client would silently re-send an idempotent request instead, hiding a dropped long-poll.)
    """
    reader, writer = await asyncio.open_connection(relay.host, relay.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {relay.origin}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    if not data:
        raise ConnectionResetError("the relay closed the connection without an answer")
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


class Collector(SubscribeCallback):  # type: ignore[misc]
    """A listener that queues what the SDK delivers, for ``await collector.next_message()``."""

    def __init__(self) -> None:
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.signals: asyncio.Queue[Any] = asyncio.Queue()
        self.presence_events: asyncio.Queue[Any] = asyncio.Queue()
        self.statuses: asyncio.Queue[Any] = asyncio.Queue()

    def message(self, pubnub: Any, message: Any) -> None:
        self.messages.put_nowait(message)

    def signal(self, pubnub: Any, signal: Any) -> None:
        self.signals.put_nowait(signal)

    def presence(self, pubnub: Any, presence: Any) -> None:
        self.presence_events.put_nowait(presence)

    def status(self, pubnub: Any, status: Any) -> None:
        self.statuses.put_nowait(status)

    async def next_status(self, category: Any) -> Any:
        async def wait() -> Any:
            while True:
                status = await self.statuses.get()
                if status.category == category:
                    return status

        return await asyncio.wait_for(wait(), WAIT)

    async def next_presence(self, event: str, uuid: str) -> Any:
        async def wait() -> Any:
            while True:
                presence = await self.presence_events.get()
                if presence.event == event and presence.uuid == uuid:
                    return presence

        return await asyncio.wait_for(wait(), WAIT)


async def subscribed(client: PubNubAsyncio, channels: list[str], *, with_presence: bool = False) -> Collector:
    """Subscribe ``client`` with a fresh Collector and return once the SDK reports it connected."""
    from pubnub.enums import PNStatusCategory

    collector = Collector()
    client.add_listener(collector)
    builder = client.subscribe().channels(channels)
    if with_presence:
        builder = builder.with_presence()
    builder.execute()
    await collector.next_status(PNStatusCategory.PNConnectedCategory)
    return collector


async def grant(
    admin: PubNubAsyncio, resources: list[Any], *, ttl: int = 15, user: str | None = None, **kw: Any
) -> str:
    channels = [r for r in resources if isinstance(r, Channel)]
    uuids = [r for r in resources if isinstance(r, UUID)]
    result = await admin.grant_token(
        channels=channels, users=uuids, ttl=ttl, authorized_user_id=user, **kw
    ).result()
    token: str = result.token
    return token


def assert_denied(envelope: Any, message: str = "Forbidden") -> None:
    assert envelope.status.is_error()
    assert envelope.status.status_code == 403
    assert envelope.status.category == PNStatusCategory.PNAccessDeniedCategory
    body = envelope.status.error_data.exception._errormsg
    assert body["service"] == "Access Manager"
    assert body["message"] == message


class SdkClients:
    """Real PubNub SDK clients (``sdk_client``), every one stopped by ``aclose``: ``clients(user_id,
    **options)`` on the relay it was given (with ``defaults`` under ``options``), ``clients.on(relay,
    user_id, **options)`` on any relay."""

    def __init__(self, relay: Relay | None = None, **defaults: Any) -> None:
        self.relay = relay
        self.defaults = defaults
        self.made: list[PubNubAsyncio] = []

    def __call__(self, user_id: str, **options: Any) -> PubNubAsyncio:
        assert self.relay is not None
        return self.on(self.relay, user_id, **options)

    def on(self, relay: Relay, user_id: str, **options: Any) -> PubNubAsyncio:
        client = sdk_client(relay, user_id=user_id, **{**self.defaults, **options})
        self.made.append(client)
        return client

    async def aclose(self) -> None:
        for client in self.made:
            await client.stop()
