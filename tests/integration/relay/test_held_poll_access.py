"""A revoked or expired token ends the subscribe long-poll it holds, at once (PROTOCOL, Who calls what).

The real SDK subscribes through its own subscribe loop; its ``AsyncioSubscriptionManager`` reports
a failed long-poll's own status (the default event engine reports any failure as a disconnect),
so a 403 shows as access denied, as for a subscribe refused at its start. The relay's long-poll
timeout is 280 s: an answer within ``WAIT`` can only have come from the revoke or the expiry.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pubnub.endpoints.presence.heartbeat import Heartbeat
from pubnub.enums import PNStatusCategory
from pubnub.models.consumer.v3.channel import Channel
from pubnub.pubnub_asyncio import AsyncioSubscriptionManager, PubNubAsyncio

from telehealth_devstack.relay import ManualClock, Relay
from tests.support.relay import WAIT, ClientFactory, Collector, assert_denied, grant, subscribed

pytestmark = pytest.mark.integration

CHANNEL = "consultation.dr-lee.pat-1"
PRESENCE = CHANNEL + "-pnpres"
REMOVED = "dr-okafor"  # the specialist whose token ends
STAYING = "dr-lee"  # still authorised on the same channel


@pytest.fixture
def admin(make_client: ClientFactory, relay: Relay) -> PubNubAsyncio:
    """The clinic's client (it holds the secret key: it grants and revokes), on the relay now
    enforcing Access Manager."""
    relay.enforce_access = True
    return make_client("clinic", with_secret_key=True)


async def reader(
    make_client: ClientFactory, admin: PubNubAsyncio, user: str, *, ttl: int = 15
) -> tuple[PubNubAsyncio, str]:
    token = await grant(admin, [Channel.id(CHANNEL).read(), Channel.id(PRESENCE).read()], ttl=ttl, user=user)
    return make_client(user, token=token, subscription_manager=AsyncioSubscriptionManager), token


async def publisher(make_client: ClientFactory, admin: PubNubAsyncio) -> PubNubAsyncio:
    token = await grant(admin, [Channel.id(CHANNEL).write()], user="pat-1")
    return make_client("pat-1", token=token)


async def holding(
    relay: Relay, client: PubNubAsyncio, polls: int, *, with_presence: bool = False
) -> Collector:
    """Subscribe ``client`` and return once the relay holds ``polls`` long-polls in all."""
    collector = await subscribed(client, [CHANNEL], with_presence=with_presence)
    await relay.wait_for_subscribers(polls)
    return collector


def assert_access_denied(status: Any, message: str) -> None:
    assert status.status_code == 403
    assert status.error_data.exception._errormsg["message"] == message


async def test_a_revoked_token_ends_its_held_poll_and_nothing_published_after_reaches_it(
    make_client: ClientFactory, relay: Relay, admin: PubNubAsyncio
) -> None:
    removed, removed_token = await reader(make_client, admin, REMOVED)
    staying, _ = await reader(make_client, admin, STAYING)
    patient = await publisher(make_client, admin)
    removed_sees = await holding(relay, removed, 1)
    staying_sees = await holding(relay, staying, 2)

    assert (await admin.revoke_token(removed_token).result()).status == 200
    published = await patient.publish().channel(CHANNEL).message("after the revoke").future()

    assert not published.status.is_error()
    denied = await removed_sees.next_status(PNStatusCategory.PNAccessDeniedCategory)
    assert_access_denied(denied, "Token is revoked.")
    assert (await asyncio.wait_for(staying_sees.messages.get(), WAIT)).message == "after the revoke"
    # Its poll was answered 403 (above), and every subscribe after is refused: nothing came.
    assert removed_sees.messages.empty()


async def test_a_token_expiring_during_a_held_poll_ends_it(
    make_client: ClientFactory, relay: Relay, relay_clock: ManualClock, admin: PubNubAsyncio
) -> None:
    removed, _ = await reader(make_client, admin, REMOVED, ttl=1)
    staying, _ = await reader(make_client, admin, STAYING)
    patient = await publisher(make_client, admin)
    removed_sees = await holding(relay, removed, 1)
    staying_sees = await holding(relay, staying, 2, with_presence=True)
    assert relay.occupants(CHANNEL) == [STAYING, REMOVED]

    relay_clock.advance(59)  # not yet: the token lives a whole minute
    assert relay.pending_subscribers() == 2
    relay_clock.advance(1)
    # Presence goes at once, before any request: a timeout event, and here_now without it.
    assert relay.occupants(CHANNEL) == [STAYING]
    published = await patient.publish().channel(CHANNEL).message("after the expiry").future()

    assert not published.status.is_error()
    denied = await removed_sees.next_status(PNStatusCategory.PNAccessDeniedCategory)
    assert_access_denied(denied, "Token is expired.")
    await staying_sees.next_presence("timeout", REMOVED)
    assert (await asyncio.wait_for(staying_sees.messages.get(), WAIT)).message == "after the expiry"
    assert removed_sees.messages.empty()
    here_now = await staying.here_now().channels([CHANNEL]).future()
    assert [o.uuid for o in here_now.result.channels[0].occupants] == [STAYING]


async def test_here_now_drops_a_revoked_user_at_once_and_refuses_its_token(
    make_client: ClientFactory, relay: Relay, admin: PubNubAsyncio
) -> None:
    removed, removed_token = await reader(make_client, admin, REMOVED)
    staying, _ = await reader(make_client, admin, STAYING)
    staying_sees = await holding(relay, staying, 1, with_presence=True)
    removed_sees = await holding(relay, removed, 2)
    await staying_sees.next_presence("join", REMOVED)

    assert (await admin.revoke_token(removed_token).result()).status == 200

    # Right after the revoke answered: no presence timeout to wait for.
    here_now = await staying.here_now().channels([CHANNEL]).future()
    assert [o.uuid for o in here_now.result.channels[0].occupants] == [STAYING]
    await staying_sees.next_presence("timeout", REMOVED)
    # Nothing was published: the revoke alone ended its poll.
    denied = await removed_sees.next_status(PNStatusCategory.PNAccessDeniedCategory)
    assert_access_denied(denied, "Token is revoked.")
    assert_denied(await Heartbeat(removed).channels([CHANNEL]).future(), "Token is revoked.")
    assert_denied(await removed.here_now().channels([CHANNEL]).future(), "Token is revoked.")
    assert relay.occupants(CHANNEL) == [STAYING]  # the refused heartbeat brought nobody back


async def test_a_user_still_holding_a_poll_with_a_good_token_stays_present(
    make_client: ClientFactory, relay: Relay, admin: PubNubAsyncio
) -> None:
    revoked, revoked_token = await reader(make_client, admin, REMOVED)
    still_good, _ = await reader(make_client, admin, REMOVED, ttl=30)  # another token, same user
    patient = await publisher(make_client, admin)
    revoked_sees = await holding(relay, revoked, 1)
    still_good_sees = await holding(relay, still_good, 2)

    assert (await admin.revoke_token(revoked_token).result()).status == 200

    assert relay.occupants(CHANNEL) == [REMOVED]
    denied = await revoked_sees.next_status(PNStatusCategory.PNAccessDeniedCategory)
    assert_access_denied(denied, "Token is revoked.")
    assert not (await patient.publish().channel(CHANNEL).message("still here").future()).status.is_error()
    assert (await asyncio.wait_for(still_good_sees.messages.get(), WAIT)).message == "still here"


async def test_presence_kept_by_heartbeats_alone_ends_with_the_token(
    make_client: ClientFactory, relay: Relay, relay_clock: ManualClock, admin: PubNubAsyncio
) -> None:
    # A user present by heartbeats only (no long-poll held): revoked, it leaves here_now at once
    # instead of at its presence timeout; the same user's heartbeat with another, good token
    # keeps it present on that token's channels.
    revoked, revoked_token = await reader(make_client, admin, REMOVED)
    staying, _ = await reader(make_client, admin, STAYING)
    staying_sees = await holding(relay, staying, 1, with_presence=True)
    assert not (await Heartbeat(revoked).channels([CHANNEL]).future()).status.is_error()
    await staying_sees.next_presence("join", REMOVED)
    expiring, _ = await reader(make_client, admin, "dr-expiring", ttl=1)
    assert not (await Heartbeat(expiring).channels([CHANNEL]).future()).status.is_error()
    await staying_sees.next_presence("join", "dr-expiring")

    assert (await admin.revoke_token(revoked_token).result()).status == 200

    assert REMOVED not in relay.occupants(CHANNEL)
    await staying_sees.next_presence("timeout", REMOVED)
    relay_clock.advance(60)  # the other token's life, far short of any presence timeout
    assert relay.occupants(CHANNEL) == [STAYING]
    await staying_sees.next_presence("timeout", "dr-expiring")
