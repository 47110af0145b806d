"""Every file the agent writes that can show a patient is its user's alone (issue 24, item 6):
the camera snapshot of ``check-devices --snapshot``, and everything a consultation leaves in the
state directories of a kiosk agent and a provider agent (state file, outbox, audit trail, open
escalations), listed with their modes while the consultation runs and after it ended. The
processes run with umask 022, so the modes are the agent's own doing, not the unit's UMask=."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devices.synthetic import write_video
from telehealth_devstack.stack import DevStack
from tests.support import consultation as visit
from tests.support.agent_child import AgentChildren
from tests.support.cli import AGENT, Process, clean_environment
from tests.support.consultation import Parts

pytestmark = pytest.mark.integration

PERMISSIVE_UMASK = 0o022


@contextmanager
def permissive_umask() -> Iterator[None]:
    """Children started inside inherit umask 022: a file the agent does not make private is 0644."""
    previous = os.umask(PERMISSIVE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, str]:
    """``root`` and every path under it, with its mode (``0o600``)."""
    return {
        str(path.relative_to(root)): oct(stat.S_IMODE(path.lstat().st_mode))
        for path in [root, *root.rglob("*")]
    }


def assert_owner_only(state_dirs: dict[str, Path]) -> None:
    for name, root in state_dirs.items():
        listing = modes(root)
        assert [path for path in listing if (root / path).is_file()], f"{name} wrote nothing"
        exposed = {path: mode for path, mode in listing.items() if int(mode, 8) & 0o077}
        assert exposed == {}, f"{name}'s state directory: {listing}"


async def test_the_camera_snapshot_is_written_owner_only(tmp_path: Path) -> None:
    video = write_video(tmp_path / "camera.mkv", "normal", frames=40)
    snapshot = tmp_path / "face.jpg"
    snapshot.write_bytes(b"an older, world-readable file")
    snapshot.chmod(0o644)
    with permissive_umask():
        check = await Process.spawn(
            *AGENT, "check-devices", "--camera", str(video), "--skip", "microphone", "--skip", "speaker",
            "--snapshot", str(snapshot), env=clean_environment({}),
        )  # fmt: skip
    code, out, err = await check.finish(within=60)
    assert code == 0, out + err
    assert snapshot.read_bytes()[:2] == b"\xff\xd8"  # replaced by the JPEG
    assert modes(tmp_path)[snapshot.name] == "0o600"
    assert not [name for name in modes(tmp_path) if name.startswith(".face.jpg")]  # no leftover


async def test_a_consultation_leaves_only_owner_only_files_in_the_state_directories(
    stack: DevStack, parts: Parts, tmp_path: Path, agent_children: AgentChildren
) -> None:
    state_dirs = {
        visit.PROVIDER: tmp_path / "processes" / visit.PROVIDER,
        visit.KIOSK: tmp_path / "processes" / visit.KIOSK,
    }
    common = {"TELEHEALTH_RECONNECT_MAX_SECONDS": "1"}
    with permissive_umask():
        provider = await agent_children.start(
            visit.provider_agent_environment(stack, state_dirs[visit.PROVIDER], **common)
        )
        await parts.record_consent()
        kiosk = await agent_children.start(
            visit.patient_agent_environment(stack, state_dirs[visit.KIOSK], **common)
        )
    await kiosk.command_ok("check-in", **visit.AGENT_CHECK_IN)
    await provider.wait_event("state-changed", consultation_id=visit.CONSULTATION, state="checked-in")
    await provider.command_ok("join", consultationId=visit.CONSULTATION)
    await kiosk.wait_event("state-changed", consultation_id=visit.CONSULTATION, state="connecting")
    await kiosk.command_ok("chat", text="it hurts when I breathe in")
    await provider.wait_event("chat-message", sender_id=visit.PATIENT)
    escalation = await provider.command_ok(
        "escalate", consultationId=visit.CONSULTATION, severity="urgent", reason="short of breath"
    )
    await provider.wait_event("emergency", escalation_id=escalation["id"], delivered=True)

    await asyncio.to_thread(assert_owner_only, state_dirs)  # the state file, outbox, audit, escalation

    await provider.command_ok("end", consultationId=visit.CONSULTATION, followUpRequired=False)
    await kiosk.wait_event("chat-wiped", consultation_id=visit.CONSULTATION)
    await provider.wait_event("chat-wiped", consultation_id=visit.CONSULTATION)
    await asyncio.to_thread(assert_owner_only, state_dirs)
