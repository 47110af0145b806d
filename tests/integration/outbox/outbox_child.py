"""An outbox in its own process, for tests that SIGKILL it.

``python -m tests.integration.outbox.outbox_child put|send PATH``; the bus settings come as JSON
in ``$OUTBOX_CHILD_BUS`` (``BusConfig`` fields), the outbox's secret in ``$OUTBOX_CHILD_SECRET``.

- ``put N CHANNEL``: attach to the bus (sending in the background, as an agent would), put N chat
  items and print ``put <id>`` as soon as each ``put()`` has returned; then wait to be killed.
- ``send``: open the outbox, print ``pending <count>``, attach, print ``sent <id>`` for each item
  as it is reported sent, and ``drained`` when nothing is left; then exit 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path

from telehealth_client.durable.at_rest import Sealer
from telehealth_client.durable.outbox import Outbox, Outgoing
from telehealth_client.pubsub.pubnub_bus import BusConfig, PubNubBus


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(mode: str, path: Path, args: list[str]) -> int:
    bus = PubNubBus(BusConfig(**json.loads(os.environ["OUTBOX_CHILD_BUS"])))
    outbox = Outbox(
        path,
        Sealer(os.environ["OUTBOX_CHILD_SECRET"], purpose="outbox"),
        on_sent=lambda item, _timetoken: say(f"sent {item.id}"),
        backoff_min_seconds=0.05,
        backoff_max_seconds=0.2,
    )
    say(f"pending {len(await outbox.open())}")
    outbox.attach(bus)
    try:
        if mode == "put":
            count, channel = int(args[0]), args[1]
            for n in range(count):
                item_id = str(uuid.uuid4())
                message = {"type": "chat", "id": item_id, "senderId": bus.user_id, "text": f"queued {n}"}
                await outbox.put(Outgoing(item_id, channel, channel, message))
                say(f"put {item_id}")
            await asyncio.Event().wait()  # until killed
        if not await outbox.wait_drained(60.0):
            say("not drained")
            return 1
        say("drained")
        return 0
    finally:
        await outbox.aclose()
        await bus.aclose()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3:])))
