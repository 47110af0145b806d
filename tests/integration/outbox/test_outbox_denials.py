"""Access Manager refusals: the denial handler (the token keeper) is asked at each 403 and is the judge:
True (a new token) tries again at once, however often a token merely expired; False (a fresh token
still refused) fails the item. A handler that never stops saying True is cut off after a bound."""

from __future__ import annotations

from telehealth_client.pubsub.bus import AccessDeniedError
from telehealth_devstack.relay import Relay
from tests.support.bus import BusFactory, Inbox, grant, subscribed
from tests.support.outbox import CHANNEL, SENDER, WAIT, OutboxFactory, chat, sending

ELSEWHERE = f"notification.{SENDER}"


async def test_a_403_is_refreshed_once_and_then_the_item_is_sent(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory
) -> None:
    relay.enforce_access = True
    watcher, inbox = make_bus("dr-lee", token=await grant(relay, "dr-lee", CHANNEL)), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    sender = make_bus(SENDER, token=await grant(relay, SENDER, ELSEWHERE))  # not this channel yet
    fresh = await grant(relay, SENDER, CHANNEL)
    refusals: list[AccessDeniedError] = []

    async def refresh(exc: AccessDeniedError) -> bool:
        refusals.append(exc)
        sender.set_token(fresh)
        return True

    item = chat("after a refresh")
    outbox, results = await sending(make_outbox, sender, item, denials=refresh)
    assert await outbox.wait_drained(WAIT)
    [envelope] = await inbox.wait_for(1)
    assert envelope.message["id"] == item.id
    assert results.sent == [(item, envelope.timetoken)]
    assert len(refusals) == 1 and refusals[0].operation == "publish"
    assert results.failed == []


async def test_the_handlers_verdict_fails_the_item_and_sending_goes_on(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory
) -> None:
    relay.enforce_access = True
    watcher, inbox = make_bus(SENDER, token=await grant(relay, SENDER, ELSEWHERE)), Inbox()
    await subscribed(watcher, ELSEWHERE, inbox)
    sender = make_bus(SENDER, token=await grant(relay, SENDER, ELSEWHERE))
    refusals: list[AccessDeniedError] = []

    async def refresh_then_verdict(exc: AccessDeniedError) -> bool:
        refusals.append(exc)
        # "Refreshed" first, yet the new token does not cover the channel either: the keeper's
        # answer to that fresh token's refusal is its verdict.
        return len(refusals) == 1

    refused, allowed = chat("refused"), chat("allowed", channel=ELSEWHERE)
    outbox, results = await sending(make_outbox, sender, refused, allowed, denials=refresh_then_verdict)
    assert await outbox.wait_drained(WAIT)
    assert results.failed == [(refused, "access-denied")]
    assert len(refusals) == 2
    [envelope] = await inbox.wait_for(1)
    assert results.sent == [(allowed, envelope.timetoken)]
    await outbox.aclose()
    assert await make_outbox().open() == []  # the failed item is off disk


async def test_an_item_refused_again_after_a_refresh_is_sent_once_a_working_token_comes(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory
) -> None:
    """A long clinic outage: the token renewed for the first 403 has expired too by the next try.
    Each 403 is the keeper's to answer; the chat is not failed for being refused twice."""
    relay.enforce_access = True
    watcher, inbox = make_bus("dr-lee", token=await grant(relay, "dr-lee", CHANNEL)), Inbox()
    await subscribed(watcher, CHANNEL, inbox)
    sender = make_bus(SENDER, token=await grant(relay, SENDER, ELSEWHERE))
    tokens = [await grant(relay, SENDER, ELSEWHERE), await grant(relay, SENDER, CHANNEL)]
    refusals: list[AccessDeniedError] = []

    async def renew(exc: AccessDeniedError) -> bool:
        refusals.append(exc)
        sender.set_token(tokens.pop(0))
        return True

    item = chat("refused twice, then sent")
    outbox, results = await sending(make_outbox, sender, item, denials=renew)
    assert await outbox.wait_drained(WAIT)
    [envelope] = await inbox.wait_for(1)
    assert results.sent == [(item, envelope.timetoken)] and results.failed == []
    assert len(refusals) == 2


async def test_a_handler_that_always_says_refreshed_is_cut_off_and_the_item_failed(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory
) -> None:
    relay.enforce_access = True
    sender = make_bus(SENDER, token=await grant(relay, SENDER, ELSEWHERE))
    refusals: list[AccessDeniedError] = []

    async def always(exc: AccessDeniedError) -> bool:
        refusals.append(exc)
        return True

    item = chat("never allowed")
    _, results = await sending(make_outbox, sender, item, denials=always)
    await results.wait_for(1)
    assert results.failed == [(item, "access-denied")]
    assert len(refusals) == 16  # the bound: no endless loop of publish, 403, "refreshed"


async def test_without_a_denial_handler_the_first_403_fails_the_item(
    relay: Relay, make_bus: BusFactory, make_outbox: OutboxFactory
) -> None:
    relay.enforce_access = True
    item = chat("no token")
    _, results = await sending(make_outbox, make_bus(SENDER), item)
    await results.wait_for(1)
    assert results.failed == [(item, "access-denied")]
