"""Fixtures shared by the integration folders (their helpers: ``tests/support``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import pytest

from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus
from telehealth_devstack.clinic import Clinic
from telehealth_devstack.relay import Relay
from telehealth_devstack.stack import DevStack
from tests.support import bus as bus_support
from tests.support import clinic as clinic_support
from tests.support.agent_child import AgentChild, AgentChildren, Launch
from tests.support.consultation import (
    PROVIDER,
    SPECIALIST,
    Parts,
    patient_agent_environment,
    provider_agent_environment,
)
from tests.support.logs import LogLines, attached


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(PROVIDER, SPECIALIST)) as running:
        yield running


@pytest.fixture
async def parts(stack: DevStack, tmp_path: Path) -> AsyncIterator[Parts]:
    built = Parts(stack, tmp_path)
    yield built
    await built.aclose()


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    with attached(LogLines(), "telehealth_client") as handler:
        yield handler


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    """The plain relay of the bus and outbox tests, with the real PubNubBus clients of ``make_bus``
    on it (folders with their own relay override it)."""
    async with Relay(
        publish_key=bus_support.PUBLISH_KEY,
        subscribe_key=bus_support.SUBSCRIBE_KEY,
        secret_key=bus_support.SECRET_KEY,
    ) as running:
        yield running


@pytest.fixture
def bus_keys() -> bus_support.BusKeys:
    """The keys of ``make_bus``'s buses: the plain relay's (folders with their own relay override it)."""
    return bus_support.KEYS


@pytest.fixture
async def make_bus(relay: Relay, bus_keys: bus_support.BusKeys) -> AsyncIterator[bus_support.BusFactory]:
    """``make_bus(user_id, **BusConfig fields)``: real buses on the relay (no token unless given,
    quick reconnects); every bus built is closed at the end of the test."""
    buses: list[PubNubBus] = []

    def build(user_id: str, **overrides: Any) -> PubNubBus:
        config = BusConfig(
            user_id=user_id,
            subscribe_key=bus_keys.subscribe_key,
            publish_key=bus_keys.publish_key,
            origin=relay.origin,
            ssl=False,
            cipher_key=bus_keys.cipher_key,
            reconnect_min_seconds=0.05,
            reconnect_max_seconds=0.5,
            request_timeout_seconds=5.0,
        )
        bus = PubNubBus(replace(config, **overrides))
        buses.append(bus)
        return bus

    yield build
    await asyncio.gather(*(bus.aclose() for bus in buses))


@pytest.fixture
async def make_clinic(tmp_path: Path) -> AsyncIterator[clinic_support.ClinicFactory]:
    """Starts clinics (default: PubNub unreachable, state in tmp_path/"clinic"); all stopped afterwards."""
    started: list[Clinic] = []

    async def make(**overrides: Any) -> Clinic:
        settings: dict[str, Any] = {
            "relay_origin": clinic_support.UNREACHABLE_ORIGIN,
            "publish_key": clinic_support.PUBLISH_KEY,
            "subscribe_key": clinic_support.SUBSCRIBE_KEY,
            "secret_key": clinic_support.SECRET_KEY,
            "device_credentials": clinic_support.DEVICE_CREDENTIALS,
            "turn_secret": clinic_support.TURN_SECRET,
            "turn_urls": clinic_support.TURN_URLS,
            "on_call": clinic_support.ON_CALL,
            "state_dir": tmp_path / "clinic",
            "directory": clinic_support.DIRECTORY,
            "organization_id": clinic_support.ORGANIZATION,
        }
        settings.update(overrides)
        clinic = Clinic(**settings)
        await clinic.start()
        started.append(clinic)
        return clinic

    yield make
    await asyncio.gather(*(clinic.stop() for clinic in started))


@pytest.fixture
async def agent_children() -> AsyncIterator[AgentChildren]:
    """Agent processes (``tests.support.agent_child``) a test starts; each stopped at its end."""
    children = AgentChildren()
    yield children
    await children.aclose()


@pytest.fixture
async def launch(parts: Parts, tmp_path: Path, agent_children: AgentChildren) -> AsyncIterator[Launch]:
    """``await launch(origin=None, log_name=None, provider=False)``: the kiosk's patient agent as a
    process on ``tmp_path/kiosk-state`` (with ``provider``, the provider's cart agent on
    ``tmp_path/provider-state``), so that one started again resumes where the last one stopped;
    reconnecting within 1 s, reaching the relay at ``origin`` (default: the stack's), its stderr
    (logs) in ``tmp_path/log_name`` (default: dropped); stopped after the test."""
    logs: list[IO[bytes]] = []

    async def start(
        origin: str | None = None, log_name: str | None = None, *, provider: bool = False
    ) -> AgentChild:
        if provider:
            environment = provider_agent_environment(parts.stack, tmp_path / "provider-state")
        else:
            environment = patient_agent_environment(parts.stack, tmp_path / "kiosk-state")
        environment["TELEHEALTH_RECONNECT_MAX_SECONDS"] = "1"
        if origin is not None:
            environment["TELEHEALTH_ORIGIN"] = origin
        if log_name is None:
            return await agent_children.start(environment)
        log_file = (tmp_path / log_name).open("wb")
        logs.append(log_file)
        return await agent_children.start(environment, logs=log_file)

    yield start
    await agent_children.aclose()  # before their log files close
    for log_file in logs:
        log_file.close()
