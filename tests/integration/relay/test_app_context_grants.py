"""App Context user permissions as the role grants use them: exact or by pattern, get and update apart.

And the notification write pattern of the staff grants: anchored, so it opens every user's
notification channel for writing and nothing that merely starts with ``notification.``.
"""

from __future__ import annotations

from typing import Any

from pubnub.models.consumer.v3.channel import Channel
from pubnub.models.consumer.v3.uuid import UUID

from telehealth_devstack.relay import Relay
from tests.support.relay import ClientFactory


def status_of(envelope: Any) -> int:
    return int(envelope.status.status_code) if envelope.status.is_error() else 200


async def test_uuid_permissions_by_pattern_and_exact(make_client: ClientFactory, relay: Relay) -> None:
    admin = make_client("clinic", with_secret_key=True)
    for user in ("dr-lee", "dr-okafor", "pat-1"):
        await admin.set_uuid_metadata(uuid=user, name=user).result()
    granted = await admin.grant_token(
        users=[UUID.pattern(r"^dr-[a-z]+$").get(), UUID.id("dr-lee").get().update()],
        ttl=15,
        authorized_user_id="dr-lee",
    ).result()
    relay.enforce_access = True
    client = make_client("dr-lee", token=granted.token)

    assert status_of(await client.get_uuid_metadata(uuid="dr-lee").future()) == 200
    assert status_of(await client.set_uuid_metadata(uuid="dr-lee", name="Dr Lee").future()) == 200
    # The pattern gives get on every matching user, and only get.
    assert status_of(await client.get_uuid_metadata(uuid="dr-okafor").future()) == 200
    assert status_of(await client.set_uuid_metadata(uuid="dr-okafor", name="x").future()) == 403
    # Neither covers a user outside the pattern.
    assert status_of(await client.get_uuid_metadata(uuid="pat-1").future()) == 403
    assert status_of(await client.set_uuid_metadata(uuid="pat-1", name="x").future()) == 403


async def test_the_notification_write_pattern_is_anchored(make_client: ClientFactory, relay: Relay) -> None:
    admin = make_client("clinic", with_secret_key=True)
    granted = await admin.grant_token(
        channels=[Channel.pattern(r"^notification\.[A-Za-z0-9_-]+$").write()],
        ttl=15,
        authorized_user_id="dr-lee",
    ).result()
    relay.enforce_access = True
    client = make_client("dr-lee", token=granted.token)

    async def publish(channel: str) -> int:
        return status_of(await client.publish().channel(channel).message({"type": "probe"}).future())

    assert await publish("notification.pat-1") == 200
    assert await publish("notification.dr-okafor") == 200
    assert await publish("notification.pat-1.extra") == 403
    assert await publish("xnotification.pat-1") == 403
    assert await publish("notification.") == 403
    assert status_of(await client.fetch_messages().channels(["notification.pat-1"]).future()) == 403
