"""The emergency desk's sealed store of open escalations: round trip, no clear text on disk, the
file gone when nothing is left, an unreadable file logged and ignored (not raised)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from telehealth_client.durable.at_rest import Sealer
from telehealth_client.emergency.desk import STORE_NAME, Escalation, EscalationStore

SECRET = "configured-cipher-key-1"
CANARY = "CANARY-4c1d collapsed in the waiting area"


def escalation(**changes: object) -> Escalation:
    fields: dict[str, object] = {
        "id": "0b6b8f1e-8f43-4c1e-9a63-0d6f2c1f7a10",
        "consultation_id": "consultation.dr-lee.pat-1",
        "department_id": "er",
        "escalated_by": "dr-lee",
        "severity": "critical",
        "reason": CANARY,
        "timestamp": datetime(2025, 3, 1, 12, 0, 0, 123000, tzinfo=UTC),
    }
    fields.update(changes)
    return Escalation(**fields)  # type: ignore[arg-type]


def test_saved_escalations_load_back_equal_and_the_file_holds_no_clear_text(tmp_path: Path) -> None:
    store = EscalationStore(tmp_path, Sealer(SECRET, purpose="state v1"))
    resolved = escalation(
        id="5f1d2c3b-4a59-4e6f-8a7b-9c0d1e2f3a4b",
        status="resolved",
        resolved_by="dr-okafor",
        resolution="CANARY-res transferred",
        resolved_at=datetime(2025, 3, 1, 12, 5, tzinfo=UTC),
        delivered=True,
        notified=2,
    )
    store.save([escalation(), resolved])
    raw = (tmp_path / STORE_NAME).read_bytes()
    assert b"CANARY" not in raw and b"dr-lee" not in raw
    assert store.load() == [escalation(), resolved]


def test_saving_nothing_removes_the_file(tmp_path: Path) -> None:
    store = EscalationStore(tmp_path, Sealer(SECRET, purpose="state v1"))
    store.save([escalation()])
    store.save([])
    assert not (tmp_path / STORE_NAME).exists()
    assert store.load() == []


def test_a_file_sealed_with_another_key_is_logged_and_kept_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    EscalationStore(tmp_path, Sealer("another-cipher-key-9", purpose="state v1")).save([escalation()])
    with caplog.at_level(logging.ERROR, logger="telehealth_client.emergency.desk"):
        assert EscalationStore(tmp_path, Sealer(SECRET, purpose="state v1")).load() == []
    assert "open escalations unreadable" in caplog.text and "SealError" in caplog.text
    assert len(list(tmp_path.glob(f"{STORE_NAME}.unreadable-*"))) == 1  # set aside, never overwritten
    assert not (tmp_path / STORE_NAME).exists()


def test_a_run_with_a_wrong_key_loses_no_open_escalation(tmp_path: Path) -> None:
    """Started once with a mistyped cipher key: that run's saves must not destroy what the file held;
    the next start with the right key (or it as a previous key) gets every escalation back."""
    right = Sealer(SECRET, purpose="state v1")
    EscalationStore(tmp_path, right).save([escalation()])
    mistyped = EscalationStore(tmp_path, Sealer("mistyped-cipher-key", purpose="state v1"))
    assert mistyped.load() == []
    newer = escalation(id="7e2a1b3c-4d5e-4f60-8a91-b2c3d4e5f607", reason="a later one")
    mistyped.save([newer])  # that run raised one of its own
    mistyped.save([])  # and finished it
    rotated = EscalationStore(tmp_path, Sealer("new-cipher-key", [SECRET], purpose="state v1"))
    assert rotated.load() == [escalation()]
    rotated.save([escalation()])
    assert list(tmp_path.glob(f"{STORE_NAME}.unreadable-*")) == []  # merged: the copy is not needed
    assert EscalationStore(tmp_path, right).load() == []  # sealed with the new key now
    assert rotated.load() == [escalation()]
