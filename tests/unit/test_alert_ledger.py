"""The alert ledger on disk (real files): what a restart keeps, and a file it must not trust."""

from __future__ import annotations

import json
import logging
import stat
import time
from pathlib import Path

import pytest

from telehealth_client.emergency.alert_ledger import LEDGER_FILE, MAX_HELD, AlertLedger

ESCALATION = "6ad9e664-0b1a-4c55-9d7e-3b7f3f1c2a10"
NOW_TIMETOKEN = int(time.time() * 10_000_000)


async def test_alerts_the_last_read_and_what_is_held_survive_a_reopen_owner_only(tmp_path: Path) -> None:
    ledger = AlertLedger(tmp_path)
    await ledger.load()
    ledger.record_alert(ESCALATION)
    ledger.advance(NOW_TIMETOKEN)
    ledger.advance(NOW_TIMETOKEN - 5)  # never backwards
    ledger.hold({"e-held": "critical"})
    await ledger.aclose()
    assert stat.S_IMODE((tmp_path / LEDGER_FILE).stat().st_mode) == 0o600

    again = AlertLedger(tmp_path)
    await again.load()
    assert again.alerted(ESCALATION) and again.alerted_ids == [ESCALATION]
    assert again.last_read == NOW_TIMETOKEN
    assert again.held == {"e-held": "critical"}


async def test_what_is_held_is_bounded(tmp_path: Path) -> None:
    ledger = AlertLedger(tmp_path)
    ledger.hold({f"e-{n}": "high" for n in range(MAX_HELD + 10)})
    await ledger.aclose()
    again = AlertLedger(tmp_path)
    await again.load()
    assert list(again.held) == [f"e-{n}" for n in range(10, MAX_HELD + 10)]  # the newest kept


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "RecursionError"),  # nested past the parser's depth
        (b"not json", "JSONDecodeError"),
        (b"[]", "not a JSON object"),
        (json.dumps({"alerted": []}).encode(), "KeyError"),
        (json.dumps({"lastRead": -1, "alerted": []}).encode(), "lastRead: must be a non-negative integer"),
        (json.dumps({"lastRead": 10**23, "alerted": []}).encode(), "lastRead: is later than now"),
        (json.dumps({"lastRead": 0, "alerted": [1]}).encode(), "alerted: must be a list of IDs"),
        (json.dumps({"lastRead": 0, "alerted": ["x" * 65]}).encode(), "alerted: must be a list of IDs"),
        (json.dumps({"lastRead": 0, "alerted": [], "held": {"e": 3}}).encode(), "held: must map IDs"),
    ],
)
async def test_a_file_it_cannot_trust_is_logged_and_the_ledger_starts_empty(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes, reason: str
) -> None:
    """An empty ledger may repeat an alert; a trusted bad one (a lastRead in the future) would
    silently skip every missed escalation, and one that raises would stop the cart starting."""
    (tmp_path / LEDGER_FILE).write_bytes(content)
    ledger = AlertLedger(tmp_path)
    with caplog.at_level(logging.ERROR, logger="telehealth_client.emergency.alert_ledger"):
        await ledger.load()
    assert (ledger.last_read, ledger.alerted_ids, ledger.held) == (0, [], {})
    [record] = caplog.records
    assert "alert ledger unusable" in record.getMessage() and reason in record.getMessage()
