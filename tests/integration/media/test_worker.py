"""The call's media in child processes (the real worker module, real aiortc, coturn, OpenCV on a
numbered video, PortAudio on ALSA file devices): a relay-only call between two children, the
child's death reported, a clean exit on close, no secret in the child's command line."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from telehealth_client.media.call import CallError
from telehealth_client.media.worker import Devices, MediaWorker
from telehealth_devstack.turn import TurnServer
from tests.support.media import Events, child_env, turn_config

pytestmark = pytest.mark.integration

WAIT = 30.0


async def test_two_media_children_hold_a_relay_only_call(turn: TurnServer, tmp_path: Path) -> None:
    patient_events, provider_events = Events(), Events()
    patient_env, patient_devices = child_env(tmp_path, "patient")
    provider_env, provider_devices = child_env(tmp_path, "provider")
    patient = await MediaWorker.spawn(on_event=patient_events, env=patient_env)
    provider = await MediaWorker.spawn(on_event=provider_events, env=provider_env)
    try:
        patient_turn, provider_turn = turn_config(turn, "pat-1"), turn_config(turn, "dr-lee")
        await patient.start(patient_turn, patient_devices)
        await provider.start(provider_turn, provider_devices)
        # The credentials went over the pipe, not the command line.
        for worker, config in ((patient, patient_turn), (provider, provider_turn)):
            cmdline = await asyncio.to_thread(Path(f"/proc/{worker.pid}/cmdline").read_bytes)
            assert config.credential.encode() not in cmdline
        offer = await provider.offer()
        answer = await patient.answer(offer)
        await provider.accept_answer(answer)
        for events in (patient_events, provider_events):
            await events.wait(event="first-frame", kind="video")
            await events.wait(event="first-frame", kind="audio")
        stats = await patient.stats()
        assert stats["received"]["video"] >= 1 and stats["received"]["audio"] >= 1
        previews = await patient.preview()
        assert previews["remote"].startswith(b"\xff\xd8")
    finally:
        await patient.aclose()
        await provider.aclose()
    assert await patient.exited == 0 and await provider.exited == 0


async def test_a_child_closes_and_exits_by_itself_while_turn_does_not_answer(
    turn: TurnServer, tmp_path: Path
) -> None:
    """Closing a connection releases its TURN allocation and waits for TURN's answer: with coturn
    frozen that never comes. The child bounds that wait and exits cleanly (before, it hung in the
    close until it was killed, and every hangup or rebuild waited for that)."""
    patient_events = Events()
    patient_env, patient_devices = child_env(tmp_path, "patient")
    provider_env, provider_devices = child_env(tmp_path, "provider")
    patient = await MediaWorker.spawn(on_event=patient_events, env=patient_env)
    provider = await MediaWorker.spawn(env=provider_env)
    assert turn.pid is not None
    try:
        await patient.start(turn_config(turn, "pat-1"), patient_devices)
        await provider.start(turn_config(turn, "dr-lee"), provider_devices)
        await provider.accept_answer(await patient.answer(await provider.offer()))
        await patient_events.wait(event="first-frame", kind="video")
        os.kill(turn.pid, signal.SIGSTOP)
        try:
            await patient.aclose()
            assert await patient.exited == 0  # not killed (-9)
        finally:
            os.kill(turn.pid, signal.SIGCONT)
    finally:
        await patient.aclose()
        await provider.aclose()


async def test_a_killed_child_fails_its_requests_with_the_reason(turn: TurnServer, tmp_path: Path) -> None:
    worker = await MediaWorker.spawn()
    try:
        await worker.start(turn_config(turn), Devices())
        os.kill(worker.pid, signal.SIGKILL)
        assert await asyncio.wait_for(worker.exited, WAIT) == -signal.SIGKILL
        with pytest.raises(CallError) as failed:
            await worker.offer()
        assert failed.value.code == "media-process"
    finally:
        await worker.aclose()


async def test_requests_before_start_and_bad_requests_are_refused(turn: TurnServer) -> None:
    worker = await MediaWorker.spawn()
    try:
        with pytest.raises(CallError) as early:
            await worker.offer()
        assert early.value.code == "not-started"
        await worker.start(turn_config(turn), Devices())
        with pytest.raises(CallError) as bad:
            await worker.answer("not sdp")
        assert bad.value.code == "sdp"
        assert (await worker.offer()).startswith("v=0")  # the child goes on after a refusal
    finally:
        await worker.aclose()
    assert await worker.exited == 0


async def test_a_child_that_stops_answering_falls_silent(turn: TurnServer) -> None:
    """Its heartbeat stops with it: ``silent`` resolves (the call's owner then kills and replaces it)."""
    worker = await MediaWorker.spawn()
    try:
        await worker.start(turn_config(turn), Devices())
        assert not worker.silent.done()
        os.kill(worker.pid, signal.SIGSTOP)
        await asyncio.wait_for(asyncio.shield(worker.silent), WAIT)
        assert not worker.exited.done()
        worker.kill()
        assert await asyncio.wait_for(worker.exited, WAIT) == -signal.SIGKILL
    finally:
        await worker.aclose()


async def test_a_reset_child_drops_its_connection_and_serves_another(turn: TurnServer) -> None:
    """A connection that never carried media is dropped and the child is started afresh for the
    next one (a rebuild then needs no new child); while it holds one, it takes no other."""
    worker = await MediaWorker.spawn()
    try:
        await worker.start(turn_config(turn), Devices())
        first = await worker.offer()
        with pytest.raises(CallError) as busy:
            await worker.start(turn_config(turn), Devices())
        assert busy.value.code == "busy"
        await worker.reset()
        await worker.start(turn_config(turn), Devices())
        second = await worker.offer()
        assert second.startswith("v=0") and second != first  # a new connection: new ICE and DTLS
    finally:
        await worker.aclose()
    assert await worker.exited == 0


async def test_a_request_cancelled_as_its_reply_arrives_is_cancelled(turn: TurnServer) -> None:
    """A hangup cancels a connection being made; if the child's reply lands in the same loop turn,
    the cancellation must still win (3.11's wait_for returned the reply instead, and the
    signaling worker it ran in went on building connections while the hangup waited for it)."""
    worker = await MediaWorker.spawn()
    try:
        await worker.start(turn_config(turn), Devices())
        os.kill(worker.pid, signal.SIGSTOP)  # the child answers nothing itself: the test does
        request = asyncio.ensure_future(worker.stats())
        async with asyncio.timeout(WAIT):
            while not worker._waiting:  # noqa: ASYNC110 - nothing to wait on: a few loop turns
                await asyncio.sleep(0)
        reply = next(iter(worker._waiting.values()))
        reply.set_result({"ok": True})
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    finally:
        worker.kill()
        await worker.aclose()


async def test_the_child_refuses_what_is_no_request_naming_the_field_and_goes_on() -> None:
    """The child's side of media/child_messages.py, talked to as a process: a line that is not JSON
    is ignored, a request that is not one is refused with its field, and the next good one works."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "telehealth_client.media.worker",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdin is not None and process.stdout is not None

    async def reply_to(request_id: int) -> dict[str, Any]:
        while True:
            line = await asyncio.wait_for(process.stdout.readline(), WAIT)  # type: ignore[union-attr]
            assert line, "the child exited"
            message = json.loads(line)
            if message.get("id") == request_id:
                return message  # type: ignore[no-any-return]

    try:
        for line in (b"not json\n", b'{"id": 1, "op": "answer"}\n', b'{"id": 2, "op": "launch"}\n'):
            process.stdin.write(line)
        process.stdin.write(b'{"id": 3, "op": "stats"}\n')
        await process.stdin.drain()
        assert await reply_to(1) == {
            "id": 1,
            "ok": False,
            "code": "request",
            "reason": "answer.sdp: Field required",
        }
        refused = await reply_to(2)
        assert (refused["ok"], refused["code"]) == (False, "request") and refused["reason"].startswith("op: ")
        stats = await reply_to(3)
        assert stats["ok"] is True and stats["state"] == "closed"
        process.stdin.write(b'{"id": 4, "op": "close"}\n')
        await process.stdin.drain()
        assert (await reply_to(4))["ok"] is True
        assert await asyncio.wait_for(process.wait(), WAIT) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
