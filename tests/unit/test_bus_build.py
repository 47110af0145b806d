"""The SDK client the bus is built on: the settings it is given are the ones the SDK then uses."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace

import pytest
from pubnub.pubnub_asyncio import PubNubAsyncio

from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_client.pubsub.pubnub_bus import BusConfig, build_pubnub

CONFIG = BusConfig(user_id="dr-smith", subscribe_key="sub-c-test", publish_key="pub-c-test")
Build = Callable[..., PubNubAsyncio]


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    built: list[PubNubAsyncio] = []

    def make(**overrides: object) -> PubNubAsyncio:
        pubnub = build_pubnub(replace(CONFIG, **overrides))  # type: ignore[arg-type]
        built.append(pubnub)
        return pubnub

    yield make
    for pubnub in built:
        await pubnub.stop()


async def test_identity_keys_and_origin_are_passed_on(build: Build) -> None:
    config = build(origin="127.0.0.1:8090", ssl=False).config
    assert (config.user_id, config.subscribe_key) == ("dr-smith", "sub-c-test")
    assert config.publish_key == "pub-c-test"
    assert (config.origin, config.ssl) == ("127.0.0.1:8090", False)
    assert build().config.ssl is True
    # The SDK's own subscribe machinery stays off: the bus runs its own loop.
    assert config.enable_subscribe is False
    assert config.log_verbosity is False


async def test_timeouts_are_whole_seconds_rounded_up_and_connect_is_capped_at_10_s(build: Build) -> None:
    config = build(
        request_timeout_seconds=2.5, subscribe_timeout_seconds=30.2, presence_timeout_seconds=60
    ).config
    assert config.non_subscribe_request_timeout == 3
    assert config.connect_timeout == 3
    assert config.subscribe_request_timeout == 31
    assert config.presence_timeout == 60
    slow = build(request_timeout_seconds=25.0).config
    assert (slow.non_subscribe_request_timeout, slow.connect_timeout) == (25, 10)


async def test_the_secret_key_is_set_only_when_given(build: Build) -> None:
    assert not build().config.secret_key
    assert build(secret_key="sec-c-dev").config.secret_key == "sec-c-dev"


async def test_a_cipher_key_sets_the_rotating_crypto_module(build: Build) -> None:
    assert build().config.crypto_module is None
    config = build(cipher_key="key-q4", previous_cipher_keys=("key-q3",)).config
    assert config.cipher_key == "key-q4"
    assert isinstance(config.crypto_module, RotatingCryptoModule)
    # The previous key is kept for reading: a message under it still decrypts.
    old = RotatingCryptoModule("key-q3").encrypt('{"n": 1}')
    assert config.crypto_module.decrypt(old) == {"n": 1}


async def test_a_token_in_the_config_is_used_from_the_start(build: Build) -> None:
    assert build()._get_token() is None
    assert build(token="p0F2AkF0")._get_token() == "p0F2AkF0"
