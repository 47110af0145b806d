"""Two publishes refused together (the second while the first's refresh is under way) get one
refresh, both are told to try again, and the consultation is not ended by a denial the new token
never had the chance to cure.

Real relay enforcing Access Manager on the shared manual clock, real clinic stand-in, real PubNubBus.
"""

from __future__ import annotations

import asyncio
from typing import Any

from telehealth_client.pubsub.bus import AccessDeniedError
from telehealth_client.security.clinic_client import TokenGrant
from tests.support.tokens import CONSULTATION, BusFactory, KeeperFactory, RecordingSource, SharedClock


class HeldRefresh:
    """The real clinic client; the second token request waits until the test lets it go."""

    def __init__(self, inner: RecordingSource) -> None:
        self.inner = inner
        self.requests = 0
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def request_token(self, user_id: str, role: str, **context: Any) -> TokenGrant:
        self.requests += 1
        if self.requests == 2:
            self.entered.set()
            await self.release.wait()
        return await self.inner.request_token(user_id, role, **context)


async def test_a_refusal_reported_during_the_refresh_is_answered_by_the_new_token(
    make_bus: BusFactory, make_keeper: KeeperFactory, kiosk: RecordingSource, clock: SharedClock
) -> None:
    bus = make_bus("patient-1")
    source = HeldRefresh(kiosk)
    keeper, events = make_keeper(bus, source=source)
    await keeper.start()
    first = asyncio.ensure_future(keeper.handle_access_denied(AccessDeniedError("publish")))
    await asyncio.wait_for(source.entered.wait(), 10.0)  # the refresh for the first is under way
    second = asyncio.ensure_future(keeper.handle_access_denied(AccessDeniedError("publish")))
    source.release.set()
    assert await asyncio.wait_for(first, 10.0) is True
    assert await asyncio.wait_for(second, 10.0) is True
    # The keeper's next steps: its scheduled refresh (80 % of the 1-minute TTL) comes after them.
    await clock.advance(48)
    await events.wait_kind("refreshed", count=2)
    assert "access-denied" not in events.kinds()
    assert source.requests == 3  # the start, one refresh for both refusals, the scheduled one
    await bus.publish(CONSULTATION, {"n": 1})  # the refreshed token works


async def test_a_refusal_of_the_old_token_that_comes_back_after_the_refresh_is_not_a_verdict(
    make_bus: BusFactory, make_keeper: KeeperFactory, kiosk: RecordingSource
) -> None:
    """A publish in flight when a 403 elsewhere got the token refreshed comes back refused after the
    refresh: that refusal was of the replaced token (the soak saw a consultation cancelled by it), so
    its caller is told to try again with the new one instead of hearing "still refused"."""
    bus = make_bus("patient-1")
    keeper, events = make_keeper(bus, source=kiosk)
    await keeper.start()
    sent_with = bus.token_generation
    first = await keeper.handle_access_denied(AccessDeniedError("publish", token_generation=sent_with))
    assert first is True  # refreshed: a newer token is on the bus
    assert bus.token_generation > sent_with
    late = await keeper.handle_access_denied(AccessDeniedError("publish", token_generation=sent_with))
    assert late is True
    assert "access-denied" not in events.kinds()
    # A refusal of the new token itself is still judged as before: still refused after a refresh.
    current = await keeper.handle_access_denied(
        AccessDeniedError("publish", token_generation=bus.token_generation)
    )
    assert current is False
    await events.wait_kind("access-denied")
