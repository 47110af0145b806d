"""Call defects found by reviews from outside: a warm spare media child that hung before it was used
held up the consultation's chat for 20 s and then failed the call (it is now watched from its start and
replaced); a burst of offers held up the chat while each was answered (signals are now applied off the
session's receive path, and a burst is answered once, the newest); an offer whose every media section
was rejected ended a working call (the kiosk gave up the call for it before aiortc refused it; such
an offer is now dropped before anything is touched)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection

from telehealth_client import events
from telehealth_client.media.worker import MediaWorker
from tests.support.consultation import (
    CONSULTATION,
    PROVIDER,
    Parts,
    RecordingHub,
    check_in_and_join,
)
from tests.support.logs import LogLines
from tests.support.media import call_under_way, flowing, media_options

pytestmark = pytest.mark.integration

VIDEO = f"{CONSULTATION}.video"


async def test_a_hung_warm_spare_does_not_block_the_call_or_the_chat(parts: Parts, tmp_path: Path) -> None:
    patient_hub, provider_hub = RecordingHub(), RecordingHub()
    built = await parts.durable_pair(
        patient_hub,
        provider_hub,
        patient={"media": media_options(tmp_path, "patient")},
        provider={"media": media_options(tmp_path, "provider")},
    )
    patient, provider = built.patient, built.provider
    await check_in_and_join(patient, provider, patient_hub, provider_hub)

    call = patient.call
    assert call is not None
    # The child that will answer: prepared while connecting (its devices open, TURN checked).
    spare = await asyncio.wait_for(call.prepared(), 30)
    assert isinstance(spare, MediaWorker)
    os.kill(spare.pid, signal.SIGSTOP)
    try:
        await provider.call(CONSULTATION)
        # The chat goes on while the patient's side builds its answer (before: held for 20 s).
        entry = await provider.chat(CONSULTATION).send("while the call is set up")
        await patient_hub.wait_for(
            lambda e: isinstance(e, events.ChatMessageAdded) and e.message_id == entry.id, within=10.0
        )
        # The hung spare is killed and the call connects in a fresh child (before: the call failed).
        assert await asyncio.wait_for(spare.exited, 30.0) == -signal.SIGKILL
        await patient_hub.wait_for(flowing("video"), within=30.0)
        assert not [
            e for e in patient_hub.items if isinstance(e, events.CallStateChanged) and e.phase == "ended"
        ]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(spare.pid, signal.SIGCONT)


async def an_offer_sdp() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("video")
    pc.addTransceiver("audio")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def test_an_offer_burst_does_not_hold_up_the_chat(parts: Parts, tmp_path: Path) -> None:
    patient_hub, provider_hub = RecordingHub(), RecordingHub()
    built = await parts.durable_pair(
        patient_hub, provider_hub, patient={"media": media_options(tmp_path, "patient")}
    )
    patient, provider = built.patient, built.provider
    await check_in_and_join(patient, provider, patient_hub, provider_hub)
    call = patient.call
    assert call is not None
    assert await asyncio.wait_for(call.prepared(), 30) is not None  # the child that will answer

    sdp = await an_offer_sdp()
    bus = provider.session(CONSULTATION).bus
    now = datetime.now(UTC).isoformat()
    for _ in range(16):  # answered one by one, the chat behind them waited about 12 s
        await bus.publish(
            VIDEO, {"type": "offer", "senderId": PROVIDER, "timestamp": now, "sdp": sdp}, store=False
        )
    started = time.monotonic()
    entry = await provider.chat(CONSULTATION).send("after the burst")
    await patient_hub.wait_for(
        lambda e: isinstance(e, events.ChatMessageAdded) and e.message_id == entry.id, within=60.0
    )
    took = time.monotonic() - started
    assert took < 5.0, f"the chat waited {took:.1f} s behind 16 offers"


async def test_an_offer_with_every_media_section_rejected_is_dropped_and_the_call_goes_on(
    parts: Parts, tmp_path: Path, log_lines: LogLines
) -> None:
    under_way = await call_under_way(parts, tmp_path)
    call = under_way.patient.call
    assert call is not None and call.worker is not None
    child = call.worker.pid
    rejected = re.sub(r"^m=(audio|video) \d+ ", r"m=\1 0 ", await an_offer_sdp(), flags=re.MULTILINE)
    assert rejected.count(" 0 UDP/TLS/RTP/SAVPF") == 2
    bus = under_way.provider.session(CONSULTATION).bus
    now = datetime.now(UTC).isoformat()
    await bus.publish(
        VIDEO, {"type": "offer", "senderId": PROVIDER, "timestamp": now, "sdp": rejected}, store=False
    )
    await log_lines.wait_line("signal dropped", "field=sdp", "no audio or video section that is not rejected")
    assert call.phase == "connected" and call.worker is not None and call.worker.pid == child
    assert not [
        e
        for e in under_way.patient_hub.items
        if isinstance(e, events.CallStateChanged) and e.phase == "ended"
    ]
