"""Bitrate adaptation under real loss: 15 % of the UDP packets into this test's own coturn are
dropped by iptables (its listening port only, on ``lo``, removed afterwards, so nothing else on
the machine is touched). The far end reports the loss, the sender lowers the ceiling on its real
VP8 encoder; once the rule is gone, clean seconds raise it again. Needs root for iptables."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable

import pytest
from aiortc import AudioStreamTrack

from telehealth_client.media.call import MediaCall
from telehealth_client.media.quality import QualitySample
from telehealth_devstack.turn import TurnServer
from tests.support.media import turn_config
from tests.support.recorder import Recorder

from .numbered import NumberedVideoTrack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("iptables") is None, reason="needs root and iptables"
    ),
]

WAIT = 40.0
VP8_MAX_KBPS = 1500


class Ceilings:
    """The video bitrate ceilings the sender reported, in kbps (told when the ceiling changes)."""

    def __init__(self) -> None:
        self.seen: list[int] = []
        self._recorder = Recorder()

    def __call__(self, sample: QualitySample) -> None:
        if sample.video_kbps_ceiling is not None:
            self.seen.append(sample.video_kbps_ceiling)
            self._recorder.changed()

    async def until(self, reached: Callable[[list[int]], bool]) -> None:
        await self._recorder.until(lambda: reached(self.seen), WAIT)


def iptables(action: str, port: int) -> None:
    rule = ["INPUT", "-i", "lo", "-p", "udp", "--dport", str(port)]
    rule += ["-m", "statistic", "--mode", "random", "--probability", "0.15", "-j", "DROP"]
    subprocess.run(["iptables", action, *rule], check=True, capture_output=True)


async def test_sustained_loss_lowers_the_encoders_ceiling_and_clean_seconds_raise_it(
    turn: TurnServer,
) -> None:
    ceilings = Ceilings()
    video = NumberedVideoTrack()
    sender = MediaCall(turn_config(turn, "dr-lee"), tracks=[video, AudioStreamTrack()], on_quality=ceilings)
    receiver = MediaCall(turn_config(turn), tracks=[AudioStreamTrack()])
    try:
        await sender.accept_answer(await receiver.answer(await sender.offer()))
        await ceilings.until(lambda seen: bool(seen))
        assert ceilings.seen[0] == VP8_MAX_KBPS  # nothing lost yet: no limit
        await asyncio.to_thread(iptables, "-I", turn.port)
        try:
            await ceilings.until(lambda seen: min(seen) < VP8_MAX_KBPS)
        finally:
            await asyncio.to_thread(iptables, "-D", turn.port)
        lowered = min(ceilings.seen)
        assert sender._pc is not None
        (rtp_sender,) = [s for s in sender._pc.getSenders() if s.track is video]
        encoder = rtp_sender._RTCRtpSender__encoder  # type: ignore[attr-defined]
        assert encoder.inner.target_bitrate <= lowered * 1000  # the real encoder is held under it
        await ceilings.until(lambda seen: seen[-1] > lowered)  # clean seconds raise it again
    finally:
        await sender.aclose()
        await receiver.aclose()
