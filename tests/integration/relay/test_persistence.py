"""What survives a relay restart on the same state directory: revocations, history, App Context."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pubnub.models.consumer.v3.channel import Channel
from pubnub.models.consumer.v3.uuid import UUID
from pubnub.pubnub_asyncio import PubNubAsyncio

from telehealth_devstack.relay import ManualClock, Relay
from telehealth_devstack.relay.persistence import DATABASE_NAME
from tests.support.relay import SdkClients, grant

CHANNEL = "consultation.prov1.pat1"
Clients = Callable[..., PubNubAsyncio]


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., PubNubAsyncio]]:
    """``clients(relay, user_id, **options)``: SDK clients on any relay, all stopped after the test."""
    clients = SdkClients()
    yield clients.on
    await clients.aclose()


def relay_on(state_dir: pathlib.Path, clock: ManualClock, **options: Any) -> Relay:
    return Relay(state_dir=state_dir, clock=clock, enforce_access=True, **options)


async def test_a_revoked_token_is_still_refused_after_a_restart(
    tmp_path: pathlib.Path, relay_clock: ManualClock, clients: Clients
) -> None:
    async with relay_on(tmp_path, relay_clock) as first:
        admin = clients(first, "clinic", with_secret_key=True)
        revoked = await grant(admin, [Channel.id(CHANNEL).write()])
        kept = await grant(admin, [Channel.id(CHANNEL).write()], ttl=30)  # not the same token
        revoking = await admin.revoke_token(revoked).future()
        assert not revoking.status.is_error(), revoking.status.error_data.exception._errormsg

    async with relay_on(tmp_path, relay_clock) as second:
        refused = await clients(second, "pat1", token=revoked).publish().channel(CHANNEL).message(1).future()
        assert refused.status.status_code == 403
        assert refused.status.error_data.exception._errormsg["message"] == "Token is revoked."
        allowed = await clients(second, "pat1", token=kept).publish().channel(CHANNEL).message(2).future()
        assert not allowed.status.is_error()
        assert [m.payload for m in second.stored_messages(CHANNEL)] == [2]


async def test_history_survives_a_restart_within_its_bounds(
    tmp_path: pathlib.Path, relay_clock: ManualClock, clients: Clients
) -> None:
    async with relay_on(tmp_path, relay_clock, max_messages_per_channel=3, max_channels=2) as first:
        server = clients(first, "clinic", with_secret_key=True)
        await server.publish().channel("evicted").message("gone").future()
        for n in range(5):
            await server.publish().channel(CHANNEL).message({"n": n}).meta({"m": n}).future()
        await server.publish().channel(CHANNEL).message("unstored").should_store(False).future()
        await server.publish().channel("other").message("kept").future()  # "evicted" was least recently used
        before = first.stored_messages(CHANNEL)

    async with relay_on(tmp_path, relay_clock, max_messages_per_channel=3, max_channels=2) as second:
        assert second.stored_messages(CHANNEL) == before
        assert [m.payload["n"] for m in before] == [2, 3, 4]
        assert second.stored_messages("evicted") == []
        assert [m.payload for m in second.stored_messages("other")] == ["kept"]
        reader = clients(second, "clinic", with_secret_key=True)
        history = await reader.fetch_messages().channels([CHANNEL]).include_meta(True).future()
        assert [(m.message, m.meta) for m in history.result.channels[CHANNEL]] == [
            ({"n": n}, {"m": n}) for n in (2, 3, 4)
        ]
        # New messages get later timetokens than everything kept.
        await reader.publish().channel(CHANNEL).message({"n": 5}).future()
        assert second.stored_messages(CHANNEL)[-1].timetoken > before[-1].timetoken

    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        rows = db.execute(
            "SELECT channel, COUNT(*) FROM messages GROUP BY channel ORDER BY channel"
        ).fetchall()
    assert rows == [(CHANNEL, 3), ("other", 1)]


def _rows_per_channel(database: pathlib.Path) -> list[tuple[str, int]]:
    connection = sqlite3.connect(database)
    try:
        query = "SELECT channel, COUNT(*) FROM messages GROUP BY channel ORDER BY channel"
        return [(str(channel), int(count)) for channel, count in connection.execute(query)]
    finally:
        connection.close()


async def test_deleted_history_stays_deleted_after_a_restart(
    tmp_path: pathlib.Path, relay_clock: ManualClock, clients: Clients
) -> None:
    async with relay_on(tmp_path, relay_clock) as first:
        server = clients(first, "clinic", with_secret_key=True)
        await server.publish().channel(CHANNEL).message("secret").future()
        assert not (await server.delete_messages().channel(CHANNEL).future()).status.is_error()
        await server.publish().channel(CHANNEL).message("after").future()

    async with relay_on(tmp_path, relay_clock) as second:
        assert [m.payload for m in second.stored_messages(CHANNEL)] == ["after"]


async def test_app_context_survives_a_restart(
    tmp_path: pathlib.Path, relay_clock: ManualClock, clients: Clients
) -> None:
    async with relay_on(tmp_path, relay_clock) as first:
        admin = clients(first, "clinic", with_secret_key=True)
        token = await grant(admin, [UUID.id("pat1").get().update().delete()], user="pat1")
        patient = clients(first, "pat1", token=token)
        written = (
            await patient.set_uuid_metadata().uuid("pat1").set_name("Pat One").custom({"lang": "fr"}).future()
        )
        assert not written.status.is_error()
        await admin.set_uuid_metadata().uuid("gone").set_name("Gone").future()
        await admin.remove_uuid_metadata().uuid("gone").future()

    async with relay_on(tmp_path, relay_clock) as second:
        patient = clients(second, "pat1", token=token)
        read = await patient.get_uuid_metadata(uuid="pat1", include_custom=True).future()
        assert (read.result.data["name"], read.result.data["custom"]) == ("Pat One", {"lang": "fr"})
        assert read.result.data["eTag"] == written.result.data["eTag"]
        admin = clients(second, "clinic", with_secret_key=True)
        missing = await admin.get_uuid_metadata().uuid("gone").future()
        assert missing.status.status_code == 404


async def test_a_stop_and_start_of_the_same_relay_keeps_writing_its_files(
    tmp_path: pathlib.Path, relay_clock: ManualClock, clients: Clients
) -> None:
    relay = relay_on(tmp_path, relay_clock)
    async with relay:
        await clients(relay, "clinic", with_secret_key=True).publish().channel(CHANNEL).message(1).future()
    async with relay:
        await clients(relay, "clinic", with_secret_key=True).publish().channel(CHANNEL).message(2).future()
        assert [m.payload for m in relay.stored_messages(CHANNEL)] == [1, 2]

    async with relay_on(tmp_path, relay_clock) as restarted:
        assert [m.payload for m in restarted.stored_messages(CHANNEL)] == [1, 2]


async def test_without_a_state_dir_nothing_is_written(
    tmp_path: pathlib.Path, relay_clock: ManualClock, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with Relay(clock=relay_clock) as relay:
        await clients(relay, "clinic", with_secret_key=True).publish().channel(CHANNEL).message(1).future()
        assert relay.state_dir is None
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []
