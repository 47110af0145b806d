"""TURN credentials held ahead of the offer (PROTOCOL.md: answer within 150 ms when the credentials
are held). The fetch here is a plain coroutine counting its calls (what the clinic backend is asked
is covered by the consultation call's integration tests); the clock is the test's."""

from __future__ import annotations

import asyncio

import pytest

from telehealth_client.media.common import TurnConfig
from telehealth_client.media.turn_credentials import REUSE_FRACTION, TurnCredentialCache, TurnGrant

TTL = 600.0


class Clinic:
    def __init__(self) -> None:
        self.fetched = 0
        self.failing: Exception | None = None
        self.gate: asyncio.Event | None = None  # when set, a fetch waits for it
        self.started = asyncio.Event()

    async def fetch(self) -> TurnGrant:
        self.fetched += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failing is not None:
            raise self.failing
        return TurnGrant(TurnConfig(("turn:127.0.0.1:3478",), f"user-{self.fetched}", "secret"), TTL)


async def test_prefetched_credentials_serve_every_connection_while_half_their_life_is_left() -> None:
    clinic, now = Clinic(), [0.0]
    cache = TurnCredentialCache(clinic.fetch, clock=lambda: now[0])
    try:
        assert not cache.held
        cache.prefetch()
        first = await cache.get()
        assert clinic.fetched == 1 and cache.held and first.username == "user-1"
        now[0] = TTL * REUSE_FRACTION - 1
        assert await cache.get() is first and clinic.fetched == 1
        cache.prefetch()  # held: nothing to fetch
        assert clinic.fetched == 1
        now[0] = TTL * REUSE_FRACTION
        assert not cache.held
        assert (await cache.get()).username == "user-2"
    finally:
        await cache.aclose()


async def test_fresh_credentials_are_fetched_when_turn_refused_the_held_ones() -> None:
    clinic = Clinic()
    cache = TurnCredentialCache(clinic.fetch)
    try:
        assert (await cache.get()).username == "user-1"
        assert (await cache.get(fresh=True)).username == "user-2"
        assert (await cache.get()).username == "user-2"
    finally:
        await cache.aclose()


async def test_callers_at_once_share_one_fetch_and_one_that_gives_up_does_not_cancel_it() -> None:
    clinic = Clinic()
    clinic.gate = asyncio.Event()
    cache = TurnCredentialCache(clinic.fetch)
    try:
        impatient = asyncio.ensure_future(cache.get())
        patient = asyncio.ensure_future(cache.get())
        await asyncio.wait_for(clinic.started.wait(), 5)
        impatient.cancel()
        clinic.gate.set()
        assert (await patient).username == "user-1"
        assert clinic.fetched == 1
        with pytest.raises(asyncio.CancelledError):
            await impatient
    finally:
        await cache.aclose()


async def test_a_failed_prefetch_is_asked_again_by_the_connection_that_needs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clinic = Clinic()
    clinic.failing = ConnectionError("clinic down")
    cache = TurnCredentialCache(clinic.fetch)
    try:
        cache.prefetch()
        with pytest.raises(ConnectionError):
            await cache.get()  # shares the prefetch's fetch, which fails
        assert not cache.held
        clinic.failing = None
        assert (await cache.get()).username == "user-2"
    finally:
        await cache.aclose()
    assert "turn credentials not fetched ahead" in caplog.text
    assert "secret" not in caplog.text


async def test_a_closed_cache_hands_out_nothing_and_stops_its_fetch() -> None:
    clinic = Clinic()
    clinic.gate = asyncio.Event()
    cache = TurnCredentialCache(clinic.fetch)
    cache.prefetch()
    await asyncio.wait_for(clinic.started.wait(), 5)
    await cache.aclose()  # the fetch waiting for the clinic is cancelled, not left behind
    assert clinic.fetched == 1
    with pytest.raises(RuntimeError, match="closed"):
        await cache.get()
    cache.prefetch()
    assert clinic.fetched == 1
