"""The soak's accounting: the chat counts of every consultation added up, and each agent's audit
trail against the clinic's sink (written, delivered, duplicated, lost by ``sequence``) with its
chain checked by ``telehealth-agent audit verify --against-sink``, as an operator would."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from telehealth_client.audit.trail import read_status
from telehealth_devstack.stack import DevStack
from tests.support.audit import sink_events
from tests.support.cli import Process

CHAT_FIELDS = (
    "sent",
    "delivered",
    "duplicated",
    "lost",
    "forged_shown",
    "foreign_shown",
    "in_history",
    "published_twice",
)
VERIFY_WITHIN = 60.0


def chat_totals(records: list[dict[str, Any]]) -> dict[str, int]:
    totals = dict.fromkeys(CHAT_FIELDS, 0)
    for record in records:
        for key in CHAT_FIELDS:
            totals[key] += int(record.get("chat", {}).get(key, 0))
    return totals


async def audit_account(stack: DevStack, device_id: str, environment: dict[str, str]) -> dict[str, Any]:
    """One stopped agent's trail against the sink, and ``audit verify --against-sink``'s verdict."""
    state_dir = Path(environment["TELEHEALTH_STATE_DIR"])
    trail = await asyncio.to_thread(read_status, state_dir)
    written = trail.base + trail.records
    held = Counter(e["sequence"] for e in await sink_events(stack) if e.get("deviceId") == device_id)
    delivered = sum(1 for sequence in range(1, written + 1) if held[sequence])
    verify = await Process.spawn(
        sys.executable, "-m", "telehealth_client", "audit", "verify", "--against-sink", env=environment
    )
    code, out, err = await verify.finish(VERIFY_WITHIN)
    return {
        "written": written,
        "delivered": delivered,
        "duplicated": sum(count - 1 for count in held.values() if count > 1),
        "lost": written - delivered,
        "awaiting": {"sink": trail.awaiting_sink, "channel": trail.awaiting_channel},
        "chain_verified": code == 0,
        "verify": (out + err).strip().splitlines()[-1:] if code != 0 else [],
    }
