"""A PubNubAsyncio client configured for a relay: what tests, the demo and the clinic stand-in use."""

from __future__ import annotations

from typing import Any

from pubnub.crypto import AesCbcCryptoModule
from pubnub.pnconfiguration import PNConfiguration
from pubnub.pubnub_asyncio import PubNubAsyncio

from .server import Relay


def sdk_config(
    relay: Relay,
    *,
    user_id: str,
    cipher_key: str | None = None,
    with_secret_key: bool = False,
    enable_subscribe: bool = True,
    presence_timeout: int | None = None,
    presence_heartbeat: bool = False,
) -> PNConfiguration:
    """Plain HTTP to the relay's origin with its keys.

    ``cipher_key`` sets both ``cipher_key`` and an ``AesCbcCryptoModule``: with the key alone SDK
    10.8 writes the legacy headerless cipher. ``with_secret_key`` makes a server-side client (it
    signs every request, so Access Manager lets it through, and it may grant tokens).
    ``presence_heartbeat``: SDK 10.8 sends heartbeats, and a ``leave`` on unsubscribe, only with it.
    """
    config = PNConfiguration()
    config.origin = relay.origin
    config.ssl = False
    config.publish_key = relay.publish_key
    config.subscribe_key = relay.subscribe_key
    config.user_id = user_id
    config.enable_subscribe = enable_subscribe
    if with_secret_key:
        config.secret_key = relay.secret_key
    if cipher_key is not None:
        config.cipher_key = cipher_key
        config.crypto_module = AesCbcCryptoModule(config)
    config.enable_presence_heartbeat = presence_heartbeat
    if presence_timeout is not None:
        config.set_presence_timeout(presence_timeout)
    return config


def sdk_client(
    relay: Relay,
    *,
    user_id: str,
    token: str | None = None,
    subscription_manager: type[Any] | None = None,
    **options: Any,
) -> PubNubAsyncio:
    """A PubNubAsyncio for ``relay`` (create it inside the running loop; ``await client.stop()`` after).

    ``subscription_manager``: the SDK's default (None) is its event engine, which reports every
    failed long-poll as a disconnect; its ``AsyncioSubscriptionManager`` reports the failure's own
    status (a 403 as access denied).
    """
    client = PubNubAsyncio(
        sdk_config(relay, user_id=user_id, **options), subscription_manager=subscription_manager
    )
    if token is not None:
        client.set_token(token)
    return client
