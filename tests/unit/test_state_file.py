import json
import os
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from telehealth_client.consultation import state_file
from telehealth_client.consultation.lifecycle import Consultation, Received, transition
from telehealth_client.consultation.roster import RosterRole
from telehealth_client.consultation.state_file import StateFileError
from telehealth_client.protocol import messages as m
from telehealth_client.protocol.messages import ConsultationState as S

CID = "consultation.dr-lee.pt-1"
T0 = datetime(2026, 11, 22, 14, 0, 0, 123000, tzinfo=UTC)


def rich() -> Consultation:
    """A consultation with every optional field set, reached through real transitions."""
    c = Consultation.new(
        consultation_id=CID, user_id="pt-1", role="patient", appointment_id="appt-9", department_id="cardio"
    )
    steps: list[tuple[m.LifecycleAction | m.QueueUpdate, str]] = [
        (
            m.PatientCheckedIn(appointment_id="appt-9", patient_id="pt-1", consultation_id=CID, timestamp=T0),
            "pt-1",
        ),
        (
            m.QueueUpdate(
                title="q",
                body="",
                priority="normal",
                timestamp=T0,
                consultation_id=CID,
                position=2,
                estimated_wait_minutes=7,
            ),
            "dr-lee",
        ),
        (
            m.DeviceStatus(camera="pass", microphone="warn", speaker="fail", network="video", timestamp=T0),
            "pt-1",
        ),
        (m.ProviderJoined(provider_id="dr-lee", timestamp=T0), "dr-lee"),
        (
            m.ProviderInvited(invited_provider_id="dr-c", invited_by="dr-lee", role="observer", timestamp=T0),
            "dr-lee",
        ),
        (
            m.ConsultationEnded(
                provider_id="dr-lee", summary=m.Summary(duration=9, follow_up_required=False), timestamp=T0
            ),
            "dr-lee",
        ),
    ]
    for tt, (message, publisher) in enumerate(steps, start=100):
        c, _ = transition(c, Received(message, publisher, tt))
    return replace(c, own_timetokens=frozenset({200, 300}))


def test_save_then_load_round_trips_every_field(tmp_path: Path) -> None:
    consultation = rich()
    assert consultation.state is S.COMPLETED and consultation.roster.role_of("dr-c") is RosterRole.OBSERVER
    state_file.save(tmp_path, consultation)
    assert state_file.load(tmp_path) == consultation


def test_a_fresh_consultation_round_trips(tmp_path: Path) -> None:
    fresh = Consultation.new(consultation_id=CID, user_id="dr-lee", role="provider")
    state_file.save(tmp_path, fresh)
    assert state_file.load(tmp_path) == fresh


def test_no_file_loads_as_none_and_remove_forgets(tmp_path: Path) -> None:
    assert state_file.load(tmp_path) is None
    state_file.save(tmp_path, rich())
    state_file.remove(tmp_path)
    assert state_file.load(tmp_path) is None
    state_file.remove(tmp_path)  # twice is fine


def test_the_file_is_owner_only_json_with_a_version_and_no_temporary_left(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    state_file.save(state_dir, rich())
    path = state_dir / state_file.FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert json.loads(path.read_text())["version"] == 1
    assert os.listdir(state_dir) == [state_file.FILE_NAME]


def test_the_file_holds_ids_and_states_only(tmp_path: Path) -> None:
    state_file.save(tmp_path, rich())
    data = json.loads((tmp_path / state_file.FILE_NAME).read_text())
    assert set(data) == {
        "version", "consultationId", "userId", "role", "appointmentId", "departmentId", "state", "roster",
        "lastTimetoken", "ownTimetokens", "openedTimetoken", "providerJoinedAt", "queuePosition",
        "estimatedWaitMinutes",
        "deviceStatus", "summary", "cancelReason",
    }  # fmt: skip
    assert "text" not in json.dumps(data)


def test_a_failed_write_leaves_the_previous_file_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = rich()
    state_file.save(tmp_path, before)

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(state_file.disk, "replace", broken_replace)
    with pytest.raises(OSError):
        state_file.save(tmp_path, replace(before, last_timetoken=999))
    monkeypatch.undo()
    assert state_file.load(tmp_path) == before
    assert os.listdir(tmp_path) == [state_file.FILE_NAME]  # the temporary is gone


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"version": 2}', "unknown version 2"),
        (b'{"state": "waiting"}', "unknown version missing/invalid"),
        (b'{"version": "1"}', "unknown version missing/invalid"),
    ],
)
def test_a_corrupt_or_unknown_file_is_a_clear_error(tmp_path: Path, content: bytes, reason: str) -> None:
    (tmp_path / state_file.FILE_NAME).write_bytes(content)
    with pytest.raises(StateFileError) as caught:
        state_file.load(tmp_path)
    assert reason in str(caught.value)
    assert str(tmp_path / state_file.FILE_NAME) in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("state", "teleporting", "state"),
        ("lastTimetoken", -1, "lastTimetoken"),
        ("lastTimetoken", "12", "lastTimetoken"),
        ("userId", "pt.1", "userId"),
        ("consultationId", "consultation.x", "consultationId"),
        ("roster", [{"userId": "a"}], "roster.0.role"),
        ("summary", {"duration": 0, "followUpRequired": True}, "duration"),
        ("extra", 1, "extra"),
    ],
)
def test_a_file_with_an_invalid_field_names_the_field_not_the_value(
    tmp_path: Path, field: str, value: object, where: str
) -> None:
    state_file.save(tmp_path, rich())
    path = tmp_path / state_file.FILE_NAME
    data = json.loads(path.read_text())
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(StateFileError) as caught:
        state_file.load(tmp_path)
    assert "is corrupt" in str(caught.value) and where in str(caught.value)
    assert "teleporting" not in str(caught.value) and "pt.1" not in str(caught.value)


def test_a_file_written_before_opened_timetoken_existed_loads_with_zero(tmp_path: Path) -> None:
    state_file.save(tmp_path, replace(rich(), opened_timetoken=0))
    path = tmp_path / state_file.FILE_NAME
    data = json.loads(path.read_text())
    del data["openedTimetoken"]
    path.write_text(json.dumps(data))
    assert state_file.load(tmp_path) == replace(rich(), opened_timetoken=0)


def test_the_opened_timetoken_round_trips(tmp_path: Path) -> None:
    state_file.save(tmp_path, replace(rich(), opened_timetoken=17_000_000_000_000_000))
    loaded = state_file.load(tmp_path)
    assert loaded is not None and loaded.opened_timetoken == 17_000_000_000_000_000


class DiskLog:
    """Makes each real fsync and rename, and records it with the path it touched (a real file
    system underneath: only the order of the calls is looked at)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def fsync(self, fd: int) -> None:
        os.fsync(fd)
        self.calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))

    def replace(self, source: str, target: Path) -> None:
        os.replace(source, target)
        self.calls.append(("rename", f"{Path(source).name} -> {Path(target).name}"))


def test_a_save_is_flushed_to_disk_before_its_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A power cut right after save() returns loses nothing: the new file's bytes reach the disk
    before it replaces the old one, and the directory entry after (issue 19: without this every
    other test stays green)."""
    log = DiskLog()
    monkeypatch.setattr(state_file.disk, "fsync", log.fsync)
    monkeypatch.setattr(state_file.disk, "replace", log.replace)
    state_file.save(tmp_path, rich())
    (flushed, file_synced), (renamed, names), (dir_flushed, directory) = log.calls
    temporary, _, final = names.partition(" -> ")
    assert (flushed, renamed, dir_flushed) == ("fsync", "rename", "fsync")
    assert Path(file_synced).name == temporary and temporary.startswith(f".{final}.")
    assert final == state_file.path_of(tmp_path).name
    assert Path(directory) == tmp_path.resolve()
    assert state_file.load(tmp_path) == rich()

    log.calls.clear()
    state_file.remove(tmp_path)  # the unlink too is made durable by flushing the directory
    assert log.calls == [("fsync", str(tmp_path.resolve()))]
