"""Access benchmark: how fast access that has lost its reason ends, and what a forged check-in flood gets.

On the development stack (relay enforcing Access Manager, the clinic stand-in over HTTP), with the
real PubNub SDK's own subscribe loop (its ``AsyncioSubscriptionManager``, which reports a 403 on a
held long-poll as access denied):

- ``revoke``: an invited specialist holds a subscribe long-poll on the consultation with a token
  naming it; the consultation's provider calls ``revoke-access``. Measured: from revoke-access's
  answer (and from its request) to the specialist's SDK reporting 403. Before issue 20 the poll
  lived on until its timeout (280 s) and chat published after the revoke still reached it.
- ``flood``: one kiosk credential asks for ``--flood`` patient tokens for distinct patient IDs into
  one provider's waiting room as fast as it can: how many were granted, how many refused 429 (with
  ``Retry-After``), and how long it took. Before issue 20: 150 of 150 granted in 1.4 s.

Prints one JSON object.

    .venv/bin/python scripts/bench_access.py [--rounds 20] [--flood 150]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
from typing import Any

import aiohttp
from pubnub.callbacks import SubscribeCallback
from pubnub.enums import PNStatusCategory
from pubnub.pubnub_asyncio import AsyncioSubscriptionManager

from telehealth_client.security.clinic_client import ClinicClient, ClinicError
from telehealth_devstack.relay.client import sdk_client
from telehealth_devstack.stack import DEFAULT_KIOSK, DevStack

PROVIDER = "dr-bench"
SPECIALIST = "dr-bench-specialist"
DEPARTMENT = "er"
WAIT_SECONDS = 10.0


class DeniedWatch(SubscribeCallback):  # type: ignore[misc]
    def __init__(self) -> None:
        self.denied: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def status(self, pubnub: Any, status: Any) -> None:
        if status.category == PNStatusCategory.PNAccessDeniedCategory and not self.denied.done():
            self.denied.set_result(time.perf_counter())

    def message(self, pubnub: Any, message: Any) -> None:
        pass

    def presence(self, pubnub: Any, presence: Any) -> None:
        pass


def stats(samples: list[float]) -> dict[str, float | int]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 1),
        "max_ms": round(ordered[-1], 1),
    }


async def revoke_round(
    stack: DevStack, provider: ClinicClient, specialist: ClinicClient, n: int
) -> tuple[float, float]:
    consultation = f"consultation.{PROVIDER}.pat-bench-{n}"
    await provider.invite(consultation, SPECIALIST, "specialist")
    grant = await specialist.request_token(
        SPECIALIST, "provider", consultationChannel=consultation, departmentId=DEPARTMENT
    )
    client = sdk_client(
        stack.relay, user_id=SPECIALIST, token=grant.token, subscription_manager=AsyncioSubscriptionManager
    )
    watch = DeniedWatch()
    client.add_listener(watch)
    polls_before = stack.relay.pending_subscribers()
    try:
        client.subscribe().channels([consultation]).execute()
        await asyncio.wait_for(stack.relay.wait_for_subscribers(polls_before + 1), WAIT_SECONDS)
        asked = time.perf_counter()
        await provider.revoke_access(SPECIALIST, consultation)
        answered = time.perf_counter()
        denied = await asyncio.wait_for(watch.denied, WAIT_SECONDS)
        return (denied - answered) * 1000, (denied - asked) * 1000
    finally:
        await client.stop()


async def flood(stack: DevStack, count: int) -> dict[str, Any]:
    assert stack.clinic is not None
    credential = stack.kiosk_credential(DEFAULT_KIOSK)
    granted = refused = 0
    retry_after: set[str] = set()
    started = time.perf_counter()
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {credential}"}) as http:
        for n in range(count):
            body = {
                "userId": f"pat-flood-{n}",
                "role": "patient",
                "providerId": PROVIDER,
                "departmentId": DEPARTMENT,
            }
            async with http.post(f"{stack.clinic.url}/api/telemedicine/token", json=body) as response:
                if response.status == 429:
                    refused += 1
                    retry_after.add(response.headers.get("Retry-After", "missing"))
                elif response.status < 400 or response.status == 403:
                    # 403: no consent recorded for a forged patient; the request still counts.
                    granted += response.status < 400
    elapsed = time.perf_counter() - started
    return {
        "attempts": count,
        "granted_or_consent_checked": count - refused,
        "granted": granted,
        "refused_429": refused,
        "retry_after_seconds": sorted(retry_after),
        "seconds": round(elapsed, 2),
    }


async def main(rounds: int, flood_count: int) -> dict[str, Any]:
    async with DevStack(providers=(PROVIDER, SPECIALIST)) as stack:
        assert stack.clinic is not None
        provider = ClinicClient(stack.clinic.url, stack.users[PROVIDER].credential)
        specialist = ClinicClient(stack.clinic.url, stack.users[SPECIALIST].credential)
        try:
            after_answer: list[float] = []
            after_request: list[float] = []
            for n in range(rounds):
                from_answer, from_request = await revoke_round(stack, provider, specialist, n)
                after_answer.append(from_answer)
                after_request.append(from_request)
            flooded = await flood(stack, flood_count)
        except ClinicError as exc:
            raise SystemExit(f"clinic refused: {exc}") from None
        finally:
            await provider.aclose()
            await specialist.aclose()
    return {
        "revoke_to_held_poll_403": {
            "after_revoke_answered": stats(after_answer),
            "after_revoke_asked": stats(after_request),
            "note": "negative after_revoke_answered: the 403 came before revoke-access answered",
            "baseline": "before: never (the poll lived until its 280 s timeout)",
        },
        "check_in_flood_one_kiosk": {**flooded, "baseline": "before: 150 of 150 granted in 1.4 s"},
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--flood", type=int, default=150)
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the clinic's rate-limit warnings are the flood's point
    print(json.dumps(asyncio.run(main(arguments.rounds, arguments.flood)), indent=2))
