"""After a stall no corrupt or stale frame reaches the receiving side: TURN frozen with SIGSTOP (real
coturn, real aiortc both ends, relay-only) while numbered frames flow; every frame handed to
``on_frame`` afterwards must read as a clean number, later than the one before it, and made after
the freeze (not one of those the frozen relay held and releases when it resumes).

Without the key-frame gate aiortc's VP8 decoder hands over dozens of frames decoded against
references lost in the freeze (DESIGN.md: 60-80 after 10 s): blocks half-drawn, numbers from
the past.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from aiortc import AudioStreamTrack
from av import VideoFrame

from telehealth_client.media.call import MediaCall
from telehealth_devstack.turn import TurnServer
from tests.support.media import UNREADABLE, strict_read, turn_config

from .numbered import NumberedVideoTrack

pytestmark = pytest.mark.integration

WAIT = 30.0
FREEZE_SECONDS = 10.0


class Shown:
    """Every remote video frame handed to on_frame, as read back."""

    def __init__(self) -> None:
        self.numbers: list[int] = []
        self._wanted = 0
        self._reached = asyncio.Event()

    def __call__(self, kind: str, frame: object) -> None:
        if kind != "video":
            return
        assert isinstance(frame, VideoFrame)
        self.numbers.append(strict_read(frame))
        if self.numbers[-1] >= self._wanted:
            self._reached.set()

    async def until(self, number: int) -> None:
        """Until a frame numbered ``number`` or later has been shown."""
        self._wanted = number
        self._reached.clear()
        if not self.numbers or max(self.numbers) < number:
            await asyncio.wait_for(self._reached.wait(), WAIT)


async def test_no_corrupt_or_stale_frame_is_shown_after_turn_was_frozen(turn: TurnServer) -> None:
    shown = Shown()
    sent = CountedTrack()
    provider = MediaCall(turn_config(turn, "dr-lee"), tracks=[sent, AudioStreamTrack()])
    # No watchdog: the call must come back on the same connection, as aiortc does by itself.
    patient = MediaCall(turn_config(turn), on_frame=shown)
    assert turn.pid is not None
    try:
        await provider.accept_answer(await patient.answer(await provider.offer()))
        await shown.until(30)
        last_before = max(shown.numbers)
        thaw_at = sent.sent + int(FREEZE_SECONDS * 30)
        thawed = sent.passed(thaw_at)
        os.kill(turn.pid, signal.SIGSTOP)
        try:
            # Frames keep being encoded and sent into the frozen relay meanwhile.
            await asyncio.wait_for(thawed.wait(), WAIT)
        finally:
            os.kill(turn.pid, signal.SIGCONT)
        await shown.until(thaw_at + 60)  # media is back: 2 s of frames sent after the freeze shown
    finally:
        await provider.aclose()
        await patient.aclose()
    unreadable = shown.numbers.count(UNREADABLE)
    backwards = sum(1 for a, b in zip(shown.numbers, shown.numbers[1:], strict=False) if b <= a)
    assert (unreadable, backwards) == (0, 0), f"{unreadable} unreadable, {backwards} out of order"
    assert max(shown.numbers) <= sent.sent
    # Nor the seconds of frames the frozen relay held and released when it resumed: the first
    # frame shown after the freeze was made after it (before, ~2 s of 10 s old pictures came first).
    stale = [number for number in shown.numbers if last_before < number < thaw_at]
    assert stale == [], f"{len(stale)} frames sent during the freeze shown after it"


class CountedTrack(NumberedVideoTrack):
    """Numbered frames; ``passed(n)`` is set once frame n has been handed to the encoder (the
    freeze is measured in frames sent, not slept for)."""

    def __init__(self) -> None:
        super().__init__(1)
        self._marks: dict[int, asyncio.Event] = {}

    def passed(self, number: int) -> asyncio.Event:
        return self._marks.setdefault(number, asyncio.Event())

    async def recv(self) -> VideoFrame:
        frame = await super().recv()
        mark = self._marks.get(self.sent)
        if mark is not None:
            mark.set()
        return frame
