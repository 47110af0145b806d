"""A consultation's call between a patient endpoint and a provider endpoint, each with its media in
child processes: the provider calls on join, the patient answers by itself, video and audio flow
both ways relay-only and the consultation moves to in-progress; a media child killed with SIGKILL is
reported and the call is rebuilt in a fresh child while the consultation goes on."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from pathlib import Path

import pytest

from telehealth_client import events
from telehealth_client.media.consultation_call import MediaOptions
from telehealth_client.protocol.messages import ConsultationState as S
from tests.support.consultation import (
    CONSULTATION,
    Parts,
    RecordingHub,
)
from tests.support.media import call_under_way, child_env, connecting, flowing, media_options
from tests.support.preflight import packet_loss

pytestmark = pytest.mark.integration

WAIT = 30.0


async def test_the_kiosk_is_ready_to_answer_before_the_offer_comes(parts: Parts, tmp_path: Path) -> None:
    # PROTOCOL.md: an offer is answered within 150 ms. The kiosk holds TURN credentials from its
    # check-in, and once the consultation is connecting a media child has its camera open and TURN
    # checked: the provider's offer is answered by that child, asking the clinic for nothing.
    patient, provider, patient_hub, provider_hub = await connecting(parts, tmp_path)
    kiosk_clinic = parts.clinics[None]
    await asyncio.wait_for(kiosk_clinic.turn_granted.wait(), WAIT)
    assert kiosk_clinic.turn_grants == 1
    call = patient.call
    assert call is not None
    prepared = await asyncio.wait_for(call.prepared(), WAIT)
    assert prepared is not None
    deadline = asyncio.get_running_loop().time() + WAIT
    while not (await prepared.stats()).get("camera_frames"):
        assert asyncio.get_running_loop().time() < deadline, "the camera did not open while connecting"
        await asyncio.sleep(0.1)  # the child's camera count, read again (nothing to wait on)
    await provider.call(CONSULTATION)
    for hub in (patient_hub, provider_hub):
        await hub.wait_for(flowing("video"), within=WAIT)
    assert call.worker is prepared
    assert kiosk_clinic.turn_grants == 1


async def test_a_call_moves_the_consultation_to_in_progress_and_survives_a_killed_media_child(
    parts: Parts, tmp_path: Path
) -> None:
    patient, provider, patient_hub, provider_hub = await connecting(parts, tmp_path)

    await provider.call(CONSULTATION)
    for hub in (patient_hub, provider_hub):
        await hub.wait_for(flowing("video"), within=WAIT)
        await hub.wait_for(flowing("audio"), within=WAIT)
    # The provider's side saw the patient's video: the consultation is in progress on both sides.
    await patient_hub.wait_state(S.IN_PROGRESS)
    await provider_hub.wait_state(S.IN_PROGRESS)
    # Each side measures the call and tells its hub (numbers only).
    for hub in (patient_hub, provider_hub):
        [quality] = await hub.wait_for(
            lambda e: isinstance(e, events.CallQualityChanged) and e.level >= 1 and e.width is not None,
            within=WAIT,
        )
        assert quality.consultation_id == CONSULTATION and quality.fps > 0 and quality.inbound_kbps > 0

    call = patient.call
    assert call is not None and call.worker is not None
    killed = call.worker.pid
    os.kill(killed, signal.SIGKILL)
    [failure] = await patient_hub.wait_for(lambda e: isinstance(e, events.MediaFailed), within=WAIT)
    assert (failure.source, failure.reason) == ("media-process", "the media process exited (signal 9)")
    # Rebuilt in a fresh child: video flows again on both sides, the consultation never left in-progress.
    await patient_hub.wait_for(flowing("video"), count=2, within=WAIT)
    await provider_hub.wait_for(flowing("video"), count=2, within=WAIT)
    assert call.worker is not None and call.worker.pid != killed
    assert patient.state is S.IN_PROGRESS
    assert [e.state for e in patient_hub.items if isinstance(e, events.StateChanged)][-1] is S.IN_PROGRESS

    await provider.end(CONSULTATION, follow_up_required=False)
    await patient_hub.wait_for(lambda e: isinstance(e, events.EndpointIdle))
    assert patient.call is None


async def test_a_call_frozen_by_its_turn_server_is_rebuilt_once_turn_answers_again(
    parts: Parts, tmp_path: Path
) -> None:
    """coturn frozen (SIGSTOP): aiortc would say nothing for ~30 s; the watchdog notices the stall,
    rebuilds are retried with back-off while TURN is out of reach, and media comes back after it."""
    under_way = await call_under_way(parts, tmp_path)
    patient, patient_hub, provider_hub = under_way.patient, under_way.patient_hub, under_way.provider_hub

    turn = parts.stack.turn
    assert turn is not None and turn.pid is not None
    os.kill(turn.pid, signal.SIGSTOP)
    try:
        for hub in (patient_hub, provider_hub):
            [stall] = await hub.wait_for(
                lambda e: isinstance(e, events.MediaFailed) and e.source == "network", within=WAIT
            )
            assert stall.reason == "media stalled"
    finally:
        os.kill(turn.pid, signal.SIGCONT)
    for hub in (patient_hub, provider_hub):
        await hub.wait_for(flowing("video"), count=2, within=WAIT)
    assert patient.state is S.IN_PROGRESS


async def test_a_call_through_a_restarted_turn_server_comes_back(parts: Parts, tmp_path: Path) -> None:
    """coturn killed and started again on its port: aiortc alone never recovers (its allocations are
    gone); the stall watchdog rebuilds the call on new allocations."""
    under_way = await call_under_way(parts, tmp_path)
    patient, patient_hub, provider_hub = under_way.patient, under_way.patient_hub, under_way.provider_hub

    turn = parts.stack.turn
    assert turn is not None
    old_pid = turn.pid
    await turn.restart()
    assert turn.pid is not None and turn.pid != old_pid
    for hub in (patient_hub, provider_hub):
        await hub.wait_for(lambda e: isinstance(e, events.MediaFailed) and e.source == "network", within=WAIT)
        await hub.wait_for(flowing("video"), count=2, within=WAIT)
    assert patient.state is S.IN_PROGRESS


async def test_a_call_whose_udp_is_dropped_for_a_while_comes_back(parts: Parts, tmp_path: Path) -> None:
    """Every datagram between coturn's relay ports dropped on lo (iptables, removed afterwards):
    the watchdog sees the stall, rebuilds are retried while nothing gets through, and media comes
    back once the path does."""
    under_way = await call_under_way(parts, tmp_path)
    patient, patient_hub, provider_hub = under_way.patient, under_way.patient_hub, under_way.provider_hub

    turn = parts.stack.turn
    assert turn is not None
    with packet_loss(turn, 1.0):
        for hub in (patient_hub, provider_hub):
            await hub.wait_for(
                lambda e: isinstance(e, events.MediaFailed) and e.source == "network", within=WAIT
            )
        # A rebuild tried while the path is cut connects nothing: no media flows meanwhile.
        assert (
            len([e for e in patient_hub.items if isinstance(e, events.MediaFlowing) and e.media == "video"])
            == 1
        )
    for hub in (patient_hub, provider_hub):
        await hub.wait_for(flowing("video"), count=2, within=WAIT)
    assert patient.state is S.IN_PROGRESS


async def test_a_hung_media_child_is_replaced_and_the_call_comes_back(parts: Parts, tmp_path: Path) -> None:
    """A media child that stops answering (SIGSTOP: a stuck codec looks the same from outside) is
    killed and the call rebuilt in a fresh child (MediaWorker's silence watch is tested on its own
    in test_worker.py: here the provider's stall rebuild may get there first)."""
    under_way = await call_under_way(parts, tmp_path)
    patient, patient_hub, provider_hub = under_way.patient, under_way.patient_hub, under_way.provider_hub

    call = patient.call
    assert call is not None and call.worker is not None
    hung = call.worker
    os.kill(hung.pid, signal.SIGSTOP)
    # Killed either way: found silent, or (when the provider's rebuild came first) not closing.
    assert await asyncio.wait_for(hung.exited, WAIT) == -signal.SIGKILL
    for hub in (patient_hub, provider_hub):
        await hub.wait_for(flowing("video"), count=2, within=WAIT)
    assert call.worker is not None and call.worker is not hung
    assert patient.state is S.IN_PROGRESS


async def test_a_kiosk_without_a_camera_still_starts_the_consultation_on_its_audio(
    parts: Parts, tmp_path: Path
) -> None:
    """The kiosk's camera is gone (its microphone works): the provider hears the patient, and
    the consultation moves to in-progress on that audio."""
    env, devices = child_env(tmp_path, "patient")
    without_camera = MediaOptions(dataclasses.replace(devices, camera=None, camera_is_file=False), env)
    _patient, provider, patient_hub, provider_hub = await connecting(parts, tmp_path, without_camera)
    await provider.call(CONSULTATION)
    await provider_hub.wait_for(flowing("audio"), within=WAIT)
    await patient_hub.wait_for(flowing("video"), within=WAIT)
    await provider_hub.wait_state(S.IN_PROGRESS)
    await patient_hub.wait_state(S.IN_PROGRESS)
    assert not [e for e in provider_hub.items if isinstance(e, events.MediaFlowing) and e.media == "video"]
    assert not [e for e in provider_hub.items + patient_hub.items if isinstance(e, events.MediaFailed)]


def ended(e: object) -> bool:
    return isinstance(e, events.CallStateChanged) and e.phase == "ended"


async def test_a_hangup_overtakes_a_rebuild_that_waits_for_turn(parts: Parts, tmp_path: Path) -> None:
    """coturn frozen: the provider's side rebuilds and waits for TURN. Its hangup abandons the
    rebuild and the end-call goes out: both sides end while TURN is still frozen, and the
    provider's call holds no media child. (A review measured ~12 s here when the hangup waited
    behind the rebuild's close of the stalled child; that close is bounded now, see test_worker.)"""
    under_way = await call_under_way(parts, tmp_path)
    patient_hub, provider_hub, provider_call = (
        under_way.patient_hub,
        under_way.provider_hub,
        under_way.provider_call,
    )
    turn = parts.stack.turn
    assert turn is not None and turn.pid is not None
    os.kill(turn.pid, signal.SIGSTOP)
    try:
        await provider_hub.wait_for(
            lambda e: isinstance(e, events.MediaFailed) and e.source == "network", within=WAIT
        )
        await provider_call.hangup()
        # Far under the ~12 s it took; a second is the target (scripts/bench_call.py measures it).
        await patient_hub.wait_for(ended, within=5.0)
        await provider_hub.wait_for(ended, within=5.0)
        assert provider_call.worker is None and provider_call.phase == "ended"
    finally:
        os.kill(turn.pid, signal.SIGCONT)


async def test_a_kiosk_resumed_in_progress_opens_no_camera_until_it_is_called(
    parts: Parts, tmp_path: Path
) -> None:
    """The agent restarts mid-consultation: the call is gone, and its camera stays closed (no
    prepared child: that is only for a provider who has joined and not called yet) until the
    provider calls again, which the kiosk answers."""
    under_way = await call_under_way(parts, tmp_path)
    await under_way.patient_hub.wait_state(S.IN_PROGRESS)
    await under_way.patient.aclose()  # the kiosk's agent stops; the consultation stays on disk

    hub = RecordingHub()
    restarted = parts.patient(hub, media=media_options(tmp_path, "patient-again"))
    session = await restarted.resume()
    assert session is not None and session.consultation.state is S.IN_PROGRESS
    call = restarted.call
    assert call is not None
    assert await call.prepared() is None
    await under_way.provider.call(CONSULTATION)
    await hub.wait_for(flowing("video"), within=WAIT)
