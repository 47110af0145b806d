"""Two MediaCalls on loopback, relay-only through real coturn: the right video both ways, audio
frames, only relay candidates; TURN refusals and outages named; bad SDP and candidates refused."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from aiortc import AudioStreamTrack

from telehealth_client.media.call import CallError, MediaCall, TurnConfig, probe_turn, relay_candidates
from telehealth_client.media.ice import relay_allocation_lost, selected_turn_client
from telehealth_client.protocol.messages import IceCandidate
from telehealth_devstack.turn import TurnServer
from tests.support.media import WAIT, Receiver, only_relay, turn_config

from .numbered import NumberedVideoTrack

pytestmark = pytest.mark.integration


async def test_a_relay_only_call_carries_the_right_video_and_audio_both_ways(turn: TurnServer) -> None:
    at_provider, at_patient = Receiver(30), Receiver(30)
    provider = MediaCall(
        turn_config(turn, "dr-lee"),
        tracks=[NumberedVideoTrack(1000), AudioStreamTrack()],
        on_frame=at_provider,
    )
    patient = MediaCall(
        turn_config(turn, "pat-1"), tracks=[NumberedVideoTrack(1), AudioStreamTrack()], on_frame=at_patient
    )
    try:
        offer = await provider.offer()
        answer = await patient.answer(offer)
        await provider.accept_answer(answer)
        assert only_relay(offer) and only_relay(answer)
        assert relay_candidates(offer) >= 1
        await asyncio.wait_for(asyncio.gather(at_provider.done.wait(), at_patient.done.wait()), WAIT)
    finally:
        await provider.aclose()
        await patient.aclose()
    # Every frame shown is one that was sent, in order: nothing corrupt, nothing from the other side.
    assert at_patient.numbers == sorted(at_patient.numbers) and at_patient.numbers[0] >= 1000
    assert at_provider.numbers == sorted(at_provider.numbers) and at_provider.numbers[0] >= 1
    assert all(n < 1000 for n in at_provider.numbers)
    assert provider.received["video"] >= 30 and patient.received["audio"] >= 30
    assert provider.first_frame_at is not None and patient.first_frame_at is not None


async def test_refused_and_expired_credentials_are_named_at_once(turn: TurnServer) -> None:
    good = turn_config(turn)
    for config in (TurnConfig(good.urls, good.username, "wrong"), turn_config(turn, expired=True)):
        started = time.monotonic()
        with pytest.raises(CallError) as refused:
            await MediaCall(config).offer()
        assert (refused.value.code, refused.value.reason) == ("turn-refused", "TURN credentials refused")
        assert time.monotonic() - started < 2.0
    await probe_turn(good)  # the right ones are taken


async def test_a_turn_server_that_is_not_running_is_named_within_the_probe_time(turn: TurnServer) -> None:
    config = turn_config(turn)
    await turn.__aexit__(None, None, None)  # coturn stopped: its port answers nothing
    started = time.monotonic()
    with pytest.raises(CallError) as unreachable:
        await MediaCall(config, probe_timeout=2.0).offer()
    assert (unreachable.value.code, unreachable.value.reason) == (
        "turn-unreachable",
        "TURN server unreachable",
    )
    assert time.monotonic() - started < 5.0


async def test_bad_sdp_and_candidates_are_refused_and_the_call_goes_on(turn: TurnServer) -> None:
    at_patient = Receiver(5)
    provider = MediaCall(turn_config(turn, "dr-lee"), tracks=[NumberedVideoTrack(), AudioStreamTrack()])
    patient = MediaCall(
        turn_config(turn), tracks=[NumberedVideoTrack(), AudioStreamTrack()], on_frame=at_patient
    )
    try:
        with pytest.raises(CallError) as early:
            await provider.accept_answer("v=0")
        assert early.value.code == "sdp"
        with pytest.raises(CallError) as garbage:
            await patient.answer("this is not SDP at all")
        assert garbage.value.code == "sdp"
        offer = await provider.offer()
        answer = await patient.answer(offer)
        for text in ("candidate:not a candidate", "1 1 udp", "candidate:1 1 udp x 127.0.0.1 9 typ relay"):
            with pytest.raises(CallError) as refused:
                await patient.add_candidate(IceCandidate(candidate=text, sdp_mid="0", sdp_m_line_index=0))
            assert refused.value.code == "candidate"
        # A browser's relay candidate, with and without the prefix, and end-of-candidates: taken.
        line = "3496624121 1 udp 58466303 127.0.0.1 49772 typ relay raddr 0.0.0.0 rport 0 generation 0"
        for text in (f"candidate:{line}", line, ""):
            await patient.add_candidate(IceCandidate(candidate=text, sdp_mid="0", sdp_m_line_index=0))
        await provider.accept_answer(answer)
        await asyncio.wait_for(at_patient.done.wait(), WAIT)
    finally:
        await provider.aclose()
        await patient.aclose()


async def test_a_side_without_camera_or_microphone_still_receives(turn: TurnServer) -> None:
    at_provider = Receiver(10)
    provider = MediaCall(turn_config(turn, "dr-lee"), on_frame=at_provider)  # no devices at all
    patient = MediaCall(turn_config(turn), tracks=[NumberedVideoTrack(), AudioStreamTrack()])
    try:
        offer = await provider.offer()
        assert "a=recvonly" in offer and offer.count("\nm=") == 2
        await provider.accept_answer(await patient.answer(offer))
        await asyncio.wait_for(at_provider.done.wait(), WAIT)
    finally:
        await provider.aclose()
        await patient.aclose()
    assert patient.received == {"audio": 0, "video": 0}  # nothing came the other way


async def test_media_that_stops_is_declared_stalled_within_the_watchdog_time(turn: TurnServer) -> None:
    """TURN frozen (SIGSTOP): aiortc says nothing for ~30 s; the watchdog on the inbound frames does."""
    at_patient = Receiver(10)
    stalled = asyncio.Event()
    provider = MediaCall(turn_config(turn, "dr-lee"), tracks=[NumberedVideoTrack(), AudioStreamTrack()])
    patient = MediaCall(
        turn_config(turn),
        tracks=[NumberedVideoTrack()],
        on_frame=at_patient,
        stall_after=1.0,
        on_stall=stalled.set,
    )
    assert turn.pid is not None
    try:
        await provider.accept_answer(await patient.answer(await provider.offer()))
        await asyncio.wait_for(at_patient.done.wait(), WAIT)
        assert patient.stalls == 0
        os.kill(turn.pid, signal.SIGSTOP)
        try:
            # How soon is measured by scripts/bench_call.py; here: it is noticed at all.
            await asyncio.wait_for(stalled.wait(), WAIT)
        finally:
            os.kill(turn.pid, signal.SIGCONT)
        assert patient.stalls == 1
    finally:
        await provider.aclose()
        await patient.aclose()


async def test_a_one_way_call_is_not_taken_for_a_stall_while_the_far_end_is_there(turn: TurnServer) -> None:
    """The provider sends, the kiosk has no devices: the provider never receives a frame, but the
    kiosk's receiver reports keep arriving, so no stall (it would rebuild the call every few
    seconds, cutting the video it sends); once the kiosk is gone, nothing arrives: a stall."""
    at_patient = Receiver(150)  # 5 s of video: the watchdog's windows pass over and over
    stalled = asyncio.Event()
    provider = MediaCall(
        turn_config(turn, "dr-lee"),
        tracks=[NumberedVideoTrack(), AudioStreamTrack()],
        connect_within=1.0,
        on_stall=stalled.set,
    )
    patient = MediaCall(turn_config(turn), on_frame=at_patient)  # no camera, no microphone
    try:
        await provider.accept_answer(await patient.answer(await provider.offer()))
        await asyncio.wait_for(at_patient.done.wait(), WAIT)
        assert provider.received == {"audio": 0, "video": 0}
        assert provider.stalls == 0 and not stalled.is_set()
        await patient.aclose()
        await asyncio.wait_for(stalled.wait(), WAIT)
        assert provider.stalls == 1
    finally:
        await provider.aclose()
        await patient.aclose()


async def test_a_restarted_turn_server_is_a_stall_at_once_not_after_the_watchdog(turn: TurnServer) -> None:
    """coturn restarted: the call's allocation is gone, so its media never comes back. The stall is
    declared when TURN says so (a Refresh answered 437), not when the watchdog's time runs out:
    here the watchdog would wait 60 s, three times this test's patience."""
    at_patient = Receiver(10)
    stalled = asyncio.Event()
    provider = MediaCall(turn_config(turn, "dr-lee"), tracks=[NumberedVideoTrack(), AudioStreamTrack()])
    patient = MediaCall(turn_config(turn), on_frame=at_patient, stall_after=3 * WAIT, on_stall=stalled.set)
    try:
        await provider.accept_answer(await patient.answer(await provider.offer()))
        await asyncio.wait_for(at_patient.done.wait(), WAIT)
        await turn.restart()
        await asyncio.wait_for(stalled.wait(), WAIT)
        assert patient.stalls == 1
    finally:
        await provider.aclose()
        await patient.aclose()


async def test_the_allocation_check_tells_gone_from_frozen_and_from_there(turn: TurnServer) -> None:
    """What the stall is declared on: only a TURN server that answers "no such allocation"."""
    at_patient = Receiver(10)
    provider = MediaCall(turn_config(turn, "dr-lee"), tracks=[NumberedVideoTrack(), AudioStreamTrack()])
    patient = MediaCall(turn_config(turn), on_frame=at_patient)
    try:
        await provider.accept_answer(await patient.answer(await provider.offer()))
        await asyncio.wait_for(at_patient.done.wait(), WAIT)
        ice = patient.ice_transport
        assert ice is not None and selected_turn_client(ice) is not None  # the checks below ask it
        assert not await relay_allocation_lost(ice, within=1.0)  # there
        assert turn.pid is not None
        os.kill(turn.pid, signal.SIGSTOP)
        try:
            assert not await relay_allocation_lost(ice, within=0.3)  # no answer: nothing known
        finally:
            os.kill(turn.pid, signal.SIGCONT)
        await turn.restart()
        assert await relay_allocation_lost(ice, within=WAIT)  # forgotten
    finally:
        await provider.aclose()
        await patient.aclose()
