"""The audit trail on the real development stack, for the audit tests: a clinic client counting its
audit posts, kiosk audit events, what the sink holds, and trails opened and closed per test."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from telehealth_client.audit.trail import (
    AuditSink,
    AuditTrail,
    ChainKeys,
    DamagedStoreError,
    LegacyChainKeys,
    audit_event,
    store_path,
)
from telehealth_client.protocol import messages
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.stack import DevStack
from tests.support.cli import AGENT, Process, unset_environment
from tests.support.consultation import KIOSK, PROVIDER
from tests.support.recorder import Recorder

__all__ = ["KIOSK", "PROVIDER"]


BACKOFF = {"backoff_min_seconds": 0.02, "backoff_max_seconds": 0.2}


class CountingClinic(ClinicClient):
    """The real clinic client, counting its audit posts: acknowledged per id, and failures."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acknowledged: Counter[str] = Counter()
        self.failures = 0
        self._recorder = Recorder()

    async def post_audit_event(self, event: Mapping[str, Any]) -> Any:
        try:
            answer = await super().post_audit_event(event)
        except Exception:
            self.failures += 1
            self._recorder.changed()
            raise
        self.acknowledged[str(event["id"])] += 1
        self._recorder.changed()
        return answer

    async def wait_failures(self, count: int, within: float = 15.0) -> None:
        await self._recorder.until(lambda: self.failures >= count, within)


def kiosk_event(number: int, organization_id: str, **overrides: Any) -> messages.AuditEvent:
    """An event the kiosk's credential may post: its actor is a patient-side ID."""
    fields: dict[str, Any] = {
        "organization_id": organization_id,
        "actor_id": KIOSK,
        "actor_role": "patient",
        "resource_type": "device",
        "resource_id": KIOSK,
        "action": "check",
        "metadata": {"sequence": number},
    }
    fields.update(overrides)
    return audit_event("DEVICE_CHECK_COMPLETED", **fields)


def as_recorded(event: messages.AuditEvent, sequence: int, device_id: str = KIOSK) -> dict[str, Any]:
    """``event``'s wire form as a trail records and delivers it: stamped with its device and sequence."""
    return {**messages.encode(event), "deviceId": device_id, "sequence": sequence}


async def sink_events(stack: DevStack) -> list[dict[str, Any]]:
    """What the audit sink holds, read as an auditor does: GET /api/audit-events."""
    assert stack.clinic is not None
    headers = {"Authorization": f"Bearer {stack.keys.auditor_credential}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.get(f"{stack.clinic.url}/api/audit-events") as response,
    ):
        assert response.status == 200
        body = await response.json()
    events: list[dict[str, Any]] = body["events"]
    return events


class Trails:
    """Builds the kiosk's audit trails; closes every one it built."""

    def __init__(self, stack: DevStack, tmp_path: Path) -> None:
        self.stack = stack
        self.state_dir = tmp_path / "state"
        # The kiosk's own: its device ID, and the chain keyed with its device credential, as the agent's.
        self.device_id = KIOSK
        self.keys = ChainKeys(stack.kiosk_credential(KIOSK))
        self._closers: list[Any] = []

    def environment(self) -> dict[str, str]:
        """The settings ``telehealth-agent audit`` needs to check these trails as the kiosk."""
        return self.stack.agent_environment(KIOSK)

    def clinic(self, url: str | None = None, user_id: str | None = None) -> CountingClinic:
        assert self.stack.clinic is not None
        credential = (
            self.stack.kiosk_credential() if user_id is None else self.stack.users[user_id].credential
        )
        client = CountingClinic(url or self.stack.clinic.url, credential, timeout_seconds=5.0)
        self._closers.append(client.aclose)
        return client

    async def record_offline(self, count: int = 3) -> list[messages.AuditEvent]:
        """``count`` kiosk events recorded by a trail with no sink, closed: all still waiting."""
        offline = await self.trail(sink=None)
        events = [kiosk_event(number, self.stack.organization_id) for number in range(count)]
        for event in events:
            await offline.record(event)
        await offline.aclose()
        return events

    def unopened(
        self, sink: AuditSink | None, user_id: str | None = None, legacy_keys: LegacyChainKeys | None = None
    ) -> AuditTrail:
        """The kiosk's trail, or (``user_id``) a provider's cart's: its own device ID and key;
        ``legacy_keys`` for a version 2 store left there."""
        keys = self.keys if user_id is None else ChainKeys(self.stack.users[user_id].credential)
        trail = AuditTrail(
            self.state_dir,
            keys=keys,
            device_id=self.device_id if user_id is None else user_id,
            organization_id=self.stack.organization_id,
            sink=sink,
            legacy_keys=legacy_keys,
            **BACKOFF,
        )
        self._closers.append(trail.aclose)
        return trail

    async def trail(self, sink: AuditSink | None, user_id: str | None = None) -> AuditTrail:
        """``unopened``, opened."""
        trail = self.unopened(sink, user_id)
        await trail.open()
        return trail

    async def aclose(self) -> None:
        for closer in reversed(self._closers):
            await closer()


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``telehealth-agent audit ARGS`` with this device's settings unless ``env`` is given."""
    process = await Process.spawn(
        *AGENT, "audit", *args, env={**unset_environment(), **(KEYED if env is None else env)}
    )
    return await process.finish()


async def run_agent(state_dir: Path, settings: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``telehealth-agent run`` on ``state_dir``; ``settings`` (a development stack's) replace the
    unreachable defaults."""
    env = unset_environment()
    env.update(
        TELEHEALTH_USER_ID="kiosk-1",
        TELEHEALTH_STATE_DIR=str(state_dir),
        TELEHEALTH_SUBSCRIBE_KEY="sub-c-start",
        TELEHEALTH_PUBLISH_KEY="pub-c-start",
        TELEHEALTH_CIPHER_KEY="start-cipher-key-0123456789",
        TELEHEALTH_DEVICE_CREDENTIAL="dev-kiosk-start",
        TELEHEALTH_ORIGIN="127.0.0.1:9",  # nothing listens: the start fails before it is needed
        TELEHEALTH_CLINIC_URL="http://127.0.0.1:9",
        TELEHEALTH_SSL="false",
        TELEHEALTH_API_PORT="0",
        TELEHEALTH_API_TOKEN="start-api-token",
    )
    env.update(settings or {})
    return await (await Process.spawn(*AGENT, "run", env=env)).finish()


async def four_delivered_two_waiting(trails: Trails, stack: DevStack, user_id: str | None = None) -> None:
    online = await trails.trail(trails.clinic(user_id=user_id), user_id)
    for number in range(4):
        await online.record(event_of(stack, user_id, number))
    assert await online.wait_delivered(WAIT)
    await online.aclose()
    offline = await trails.trail(None, user_id)  # the clinic out of reach: these wait
    for number in range(4, 6):
        await offline.record(event_of(stack, user_id, number))
    await offline.aclose()


def remove_store(state_dir: Path) -> None:
    """audit.sqlite3 and its WAL and shared memory, as someone with the directory removes them."""
    remove_sqlite_file(store_path(state_dir))


async def held_by_sink(stack: DevStack) -> list[tuple[str, object]]:
    return [(event["id"], event.get("sequence")) for event in await sink_events(stack)]


async def restart_refused(trails: Trails, stack: DevStack, user_id: str | None = None) -> DamagedStoreError:
    """The agent's start on the state directory, its clinic reachable: refused, nothing delivered."""
    trail = trails.unopened(
        trails.clinic(user_id=user_id), user_id, legacy_keys=LegacyChainKeys(stack.keys.cipher_key)
    )
    with pytest.raises(DamagedStoreError) as refused:
        await trail.open()
    return refused.value


DEVICE = "kiosk-1"


CREDENTIAL = "audit-cli-device-credential-0123"


KEYED = {"TELEHEALTH_USER_ID": DEVICE, "TELEHEALTH_DEVICE_CREDENTIAL": CREDENTIAL}


WAIT = 15.0


def event_of(stack: DevStack, user_id: str | None, number: int) -> messages.AuditEvent:
    if user_id is None:
        return kiosk_event(number, stack.organization_id)
    return audit_event(
        "DEVICE_CHECK_COMPLETED",
        organization_id=stack.organization_id,
        actor_id=user_id,
        actor_role="provider",
        resource_type="device",
        resource_id=user_id,
        action="check",
        metadata={"number": number},
    )


def remove_sqlite_file(path: Path) -> None:
    for name in (path.name, path.name + "-wal", path.name + "-shm"):
        path.with_name(name).unlink(missing_ok=True)
