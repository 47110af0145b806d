"""The soak's CI-sized run (issue 25): scripts/soak.py as a process, ten consultations between a
kiosk and a provider's cart (``telehealth-agent run`` each, with media) on the development stack,
every fault kind of tests/support/soak/faults.py injected at least once at a seeded moment.

It fails on any consultation not completed, any chat message or audit event lost or duplicated, a
forged message shown, an audit chain that does not verify, a media child outliving its killed agent,
or RSS, descriptor or thread growth past the generous bounds of ``runner.BOUNDS`` after warm-up
(``runner.judge``: the script's own verdict, checked here line by line)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.cli import Process
from tests.support.soak.faults import KINDS
from tests.support.soak.runner import BOUNDS, MEDIA_RSS_BOUND, WARM_UP

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "soak.py"
CONSULTATIONS = 10
SEED = 12
RUN_WITHIN = 420.0  # ten consultations with calls and faults on a shared 2-core machine


@pytest.mark.timeout(RUN_WITHIN + 60)
async def test_ten_consultations_with_every_fault_lose_nothing_and_stay_lean(tmp_path: Path) -> None:
    report = tmp_path / "soak.html"
    soak = await Process.spawn(
        sys.executable,
        str(SCRIPT),
        "--consultations",
        str(CONSULTATIONS),
        "--seed",
        str(SEED),
        "--report",
        str(report),
    )
    code, out, err = await soak.finish(RUN_WITHIN)
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert rows and rows[-1].get("summary"), out + err[-4000:]
    summary = rows[-1]
    consultations = rows[:-1]
    assert len(consultations) == CONSULTATIONS, out

    failed = [
        (r["index"], r["step"], r["error"], r["planned"], r.get("logs"))
        for r in consultations
        if not r["completed"]
    ]
    assert failed == [], failed
    assert summary["completed"] == CONSULTATIONS
    chat = summary["chat"]
    assert chat["sent"] > 0 and chat["delivered"] == chat["in_history"] == chat["sent"], chat
    wrong = {key: chat[key] for key in ("lost", "duplicated", "forged_shown", "foreign_shown")}
    assert wrong == dict.fromkeys(wrong, 0), chat
    for side, audit in summary["audit"].items():
        assert audit["written"] > 0, (side, audit)
        assert (audit["lost"], audit["duplicated"]) == (0, 0), (side, audit)
        assert audit["chain_verified"], (side, audit)
    assert all(summary["faults_by_kind"][kind] >= 1 for kind in KINDS), summary["faults_by_kind"]
    assert summary["orphaned_media_children"] == 0
    assert summary["emergencies"] >= 1
    for name, grown in summary["growth"].items():
        window = grown["after_warm_up"]
        bound = MEDIA_RSS_BOUND if name.endswith("media.rss_mb") else BOUNDS.get(name.rsplit(".", 1)[1])
        assert window is not None and grown["per_consultation"] is not None, (name, grown)
        if bound is not None:
            assert window["max"] - window["min"] <= bound, (name, grown, WARM_UP)
    assert summary["problems"] == [], summary["problems"]
    assert code == 0, err[-4000:]
    assert report.exists() and "<img" in report.read_text()
