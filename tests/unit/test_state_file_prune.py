"""The consultations' state files under the retention: a file of a consultation that is over goes
once it was last written before the cutoff, a resumable one stays however old, and a
consultation's empty directory goes once nothing was written to it since the cutoff.

Real files in a temporary directory; a file's age is its modification time, set back with
``os.utime`` as the passing weeks would.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from telehealth_client.consultation import state_file
from telehealth_client.consultation.lifecycle import Consultation
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.retention import resumed, resumed_by_provider

NOW = time.time()
CUTOFF = NOW - 30 * 86_400
OLD = NOW - 40 * 86_400


def consultation(
    provider: str = "dr-lee", patient: str = "pt-1", user: str = "dr-lee", **fields: object
) -> Consultation:
    made = Consultation.new(
        consultation_id=f"consultation.{provider}.{patient}",
        user_id=user,
        role="provider" if user.startswith("dr-") else "patient",
    )
    return replace(made, **fields)  # type: ignore[arg-type]


def saved(directory: Path, what: Consultation, at: float) -> Path:
    state_file.save(directory, what)
    os.utime(state_file.path_of(directory), (at, at))
    os.utime(directory, (at, at))
    return directory


def test_an_ended_consultations_file_past_the_cutoff_goes(tmp_path: Path) -> None:
    directory = saved(tmp_path / "kiosk", consultation(user="pt-1", state=S.COMPLETED), OLD)
    assert state_file.prune(directory, CUTOFF, resumed)
    assert state_file.load(directory) is None


@pytest.mark.parametrize(
    ("what", "at"),
    [
        (consultation(user="pt-1", state=S.COMPLETED), NOW - 86_400),  # ended, but recently
        (consultation(user="pt-1", state=S.IN_PROGRESS), OLD),  # old, but the kiosk resumes it
    ],
    ids=["ended-recently", "open-and-old"],
)
def test_a_recent_or_resumable_file_stays(tmp_path: Path, what: Consultation, at: float) -> None:
    directory = saved(tmp_path / "kiosk", what, at)
    assert not state_file.prune(directory, CUTOFF, resumed)
    assert state_file.load(directory) == what


def test_an_unreadable_file_stays_whatever_its_age(tmp_path: Path) -> None:
    path = state_file.path_of(tmp_path)
    path.write_bytes(b'{"version": 9}')  # a later version's, say
    os.utime(path, (OLD, OLD))
    assert not state_file.prune(tmp_path, CUTOFF, resumed)
    assert path.read_bytes() == b'{"version": 9}'


def test_a_crashed_writes_temporary_files_past_the_cutoff_go(tmp_path: Path) -> None:
    old_temporary = tmp_path / f".{state_file.FILE_NAME}.abc123.tmp"
    new_temporary = tmp_path / f".{state_file.FILE_NAME}.def456.tmp"
    for path in (old_temporary, new_temporary):
        path.write_bytes(b"{")
    os.utime(old_temporary, (OLD, OLD))
    state_file.prune(tmp_path, CUTOFF, resumed)
    assert sorted(os.listdir(tmp_path)) == [new_temporary.name]


def test_a_providers_directories_ended_guests_and_empty_ones_go_its_own_open_ones_stay(
    tmp_path: Path,
) -> None:
    parent = tmp_path / "consultations"
    ended = saved(parent / "consultation.dr-lee.pt-1", consultation(state=S.COMPLETED), OLD)
    guest = saved(  # invited to another provider's consultation: never resumed after a restart
        parent / "consultation.dr-okafor.pt-2",
        consultation("dr-okafor", "pt-2", user="dr-lee", state=S.IN_PROGRESS),
        OLD,
    )
    own_open = saved(parent / "consultation.dr-lee.pt-3", consultation(patient="pt-3", state=S.WAITING), OLD)
    empty_old = parent / "consultation.dr-lee.pt-4"
    empty_old.mkdir(parents=True)
    os.utime(empty_old, (OLD, OLD))
    empty_recent = parent / "consultation.dr-lee.pt-5"  # ended yesterday: its file removed then
    empty_recent.mkdir()

    assert state_file.prune_each(parent, CUTOFF, resumed_by_provider) == 2
    assert sorted(os.listdir(parent)) == [own_open.name, empty_recent.name]
    assert not ended.exists() and not guest.exists()
    assert state_file.load(own_open) is not None
    assert state_file.prune_each(tmp_path / "none", CUTOFF, resumed_by_provider) == 0


def test_a_file_written_again_while_it_was_judged_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same consultation ID in use again (a provider's next consultation with the same
    patient): a checkpoint that lands between the retention's read and its removal is kept."""
    directory = saved(tmp_path / "c", consultation(state=S.COMPLETED), OLD)
    fresh = consultation(state=S.WAITING)
    load = state_file.load

    def load_then_checkpoint(where: Path) -> Consultation | None:
        found = load(where)
        state_file.save(where, fresh)  # the new session's first checkpoint
        return found

    monkeypatch.setattr(state_file, "load", load_then_checkpoint)
    assert not state_file.prune(directory, CUTOFF, resumed_by_provider)
    monkeypatch.undo()
    assert state_file.load(directory) == fresh


def test_a_checkpoint_after_its_directory_was_pruned_recreates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "consultations" / "consultation.dr-lee.pt-1"
    made = state_file.make_private_directory

    def made_then_pruned(where: Path) -> None:
        made(where)
        if where == directory and not getattr(made_then_pruned, "done", False):
            made_then_pruned.done = True  # type: ignore[attr-defined]
            where.rmdir()  # the retention's rmdir, between the two steps of a save

    monkeypatch.setattr(state_file, "make_private_directory", made_then_pruned)
    state_file.save(directory, consultation(state=S.WAITING))
    monkeypatch.undo()
    assert state_file.load(directory) == consultation(state=S.WAITING)
