"""The state file written behind the transitions: coalesced, flushed on demand, never after close."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from telehealth_client.consultation import state_file
from telehealth_client.consultation.checkpoint import Checkpointer
from telehealth_client.consultation.lifecycle import Consultation

CID = "consultation.dr-lee.pt-1"


def at(timetoken: int) -> Consultation:
    fresh = Consultation.new(consultation_id=CID, user_id="dr-lee", role="provider")
    return dataclasses.replace(fresh, last_timetoken=timetoken)


async def test_a_burst_of_requests_is_one_write_of_the_newest(tmp_path: Path) -> None:
    saved: list[int] = []
    checkpoint = Checkpointer(tmp_path, on_saved=lambda c: saved.append(c.last_timetoken))
    for timetoken in range(1, 51):  # no await between them: the writer has not run yet
        checkpoint.request(at(timetoken))
    assert await checkpoint.flush() is True
    assert saved == [50]
    assert state_file.load(tmp_path) == at(50)
    await checkpoint.aclose()


async def test_flush_waits_for_the_write_of_everything_requested(tmp_path: Path) -> None:
    checkpoint = Checkpointer(tmp_path)
    checkpoint.request(at(7))
    assert state_file.load(tmp_path) is None  # written behind, not inline
    assert await checkpoint.flush() is True
    assert state_file.load(tmp_path) == at(7)
    checkpoint.request(at(8))
    assert await checkpoint.flush() is True
    assert state_file.load(tmp_path) == at(8)
    await checkpoint.aclose()


async def test_nothing_requested_flushes_at_once(tmp_path: Path) -> None:
    assert await Checkpointer(tmp_path).flush() is True
    assert state_file.load(tmp_path) is None


async def test_close_lands_the_pending_write_and_nothing_after_it(tmp_path: Path) -> None:
    checkpoint = Checkpointer(tmp_path)
    checkpoint.request(at(3))
    await checkpoint.aclose()
    assert state_file.load(tmp_path) == at(3)
    # The caller may now remove the file: no late write brings it back.
    state_file.remove(tmp_path)
    checkpoint.request(at(4))
    assert await checkpoint.flush() is True
    assert state_file.load(tmp_path) is None


async def test_a_failed_write_is_reported_and_retried_with_the_next_request(tmp_path: Path) -> None:
    blocked = tmp_path / "state"
    blocked.write_text("a file where the state directory belongs")
    saved: list[int] = []
    checkpoint = Checkpointer(blocked, on_saved=lambda c: saved.append(c.last_timetoken))
    checkpoint.request(at(1))
    assert await checkpoint.flush() is False
    assert saved == []
    blocked.unlink()
    checkpoint.request(at(2))
    assert await checkpoint.flush() is True
    assert saved == [2]
    assert state_file.load(blocked) == at(2)
    await checkpoint.aclose()
