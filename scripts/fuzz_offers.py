"""Broken offers against the media child: does every one get a refusal with a reason, and does the
child live through all of them? (issue 21, item 4: an offer that breaks aiortc must never end a call)

A real aiortc offer (relay-only through coturn on loopback) is cut at every 10 % and mutated
(``tests/integration/media/offer_mutations.py``: one to three lines dropped, duplicated, swapped,
cut, or given other values, fields or characters; seeded, so every run makes the same ones). Each
goes through what the kiosk does with an offer during a call: the SDP gate (``check_sdp``), then an
``answer`` request to a started media child, the one that would hold the new connection. The child
must answer every request, ``ok`` or a refusal with its code and reason, and never exit or hang; a
refused child is idle again and takes the next offer (an answered one holds its connection and is
replaced). The mid-call test (``tests/integration/media/test_make_before_break.py``) sends a sample
through a whole call.

Prints one JSON object: the counts of offers refused at the gate, refused by the child (by reason),
answered, and the children that died or hung (must be 0). Exit 0 when none did.

    .venv/bin/python scripts/fuzz_offers.py [--count 435] [--seed 21] [--json-only]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection  # noqa: E402
from aiortc.rtcconfiguration import RTCIceTransportPolicy  # noqa: E402

from telehealth_client.media.common import CallError, TurnConfig, check_sdp  # noqa: E402
from telehealth_client.media.worker import Devices, MediaWorker  # noqa: E402
from telehealth_devstack.turn import TurnServer, turn_rest_credentials  # noqa: E402
from tests.integration.media.offer_mutations import mutations, truncations  # noqa: E402


async def real_offer(turn: TurnConfig) -> str:
    server = RTCIceServer(urls=list(turn.urls), username=turn.username, credential=turn.credential)
    pc = RTCPeerConnection(
        RTCConfiguration(iceServers=[server], iceTransportPolicy=RTCIceTransportPolicy.RELAY)
    )
    try:
        pc.addTransceiver("audio")
        pc.addTransceiver("video")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def run(count: int, seed: int, quiet: bool) -> dict[str, Any]:
    async with TurnServer() as server:
        username, credential = turn_rest_credentials(server.secret, "dr-fuzz", 3600)
        turn = TurnConfig(tuple(server.urls), username, credential)
        base = await real_offer(turn)
        offers = truncations(base) + mutations(base, count, seed)
        outcomes: collections.Counter[str] = collections.Counter()
        refusals: collections.Counter[str] = collections.Counter()
        casualties: list[dict[str, Any]] = []
        started = time.monotonic()
        worker = await MediaWorker.spawn()
        try:
            for label, sdp in offers:
                try:
                    check_sdp(sdp, "offer")
                except CallError:
                    outcomes["refused at the gate"] += 1
                    continue
                await worker.start(turn, Devices())
                try:
                    await worker.answer(sdp)
                except CallError as exc:
                    if exc.code == "media-process":
                        casualties.append({"offer": label, "reason": exc.reason})
                    else:
                        outcomes["refused by the child"] += 1
                        refusals[f"{exc.code}: {exc.reason}"] += 1
                        continue
                else:
                    outcomes["answered"] += 1
                # Answered (it holds that connection now) or gone: the next offer gets a fresh child.
                await worker.aclose()
                if worker.silent.done():
                    casualties.append({"offer": label, "reason": "fell silent"})
                worker = await MediaWorker.spawn()
                if not quiet:
                    print(f"{label}: {dict(outcomes)}", file=sys.stderr)
        finally:
            await worker.aclose()
        return {
            "offers": len(offers),
            "seed": seed,
            "outcomes": dict(outcomes),
            "refusals": dict(refusals.most_common()),
            "children_died_or_hung": casualties,
            "seconds": round(time.monotonic() - started, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=435, help="mutations (besides the 9 truncations)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(args.count, args.seed, args.json_only))
    print(json.dumps(result, indent=2))
    sys.exit(0 if not result["children_died_or_hung"] else 1)


if __name__ == "__main__":
    main()
