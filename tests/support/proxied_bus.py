"""The nurse's PubNub bus on the development stack, reaching out through a given ``Outbound`` (a
proxy, a CA bundle), with the fast back-off of the network tests: ``proxied_bus(stack, origin,
outbound, **overrides)``, where ``overrides`` are further ``BusConfig`` fields.
"""

from __future__ import annotations

from telehealth_client.outbound import Outbound
from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus
from telehealth_devstack.stack import DevStack
from tests.support.consultation import NURSE


def proxied_bus(stack: DevStack, origin: str, outbound: Outbound, **overrides: float) -> PubNubBus:
    return PubNubBus(
        BusConfig(
            user_id=NURSE,
            subscribe_key=stack.keys.subscribe_key,
            publish_key=stack.keys.publish_key,
            origin=origin,
            cipher_key=stack.keys.cipher_key,
            # The back-off of any other fault: several attempts a second.
            reconnect_min_seconds=0.05,
            reconnect_max_seconds=0.5,
            request_timeout_seconds=5.0,
            outbound=outbound,
            **overrides,
        )
    )
