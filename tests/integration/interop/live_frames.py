"""Live video both ways between the provider page and the kiosk, read from the pictures themselves.

Both cameras draw a number into every picture in the layout of ``scripts/bench_call_tap/frame_tap.py``
(12 bits and their complement as black or white blocks): the kiosk's camera is a video file of such
pictures, the page's (``camera: "numbered"``) a canvas whose number is the time it was drawn. Each
side logs what it sent and what it showed:

- the kiosk's media children through the frame tap (loaded from ``scripts/bench_call_tap`` by
  ``sitecustomize`` when that directory is on the child's ``PYTHONPATH``): one log file per child,
  ``kiosk-<pid>.tap`` of ``s|r number monotonic-time`` lines;
- the page through ``frameLog`` (its clock is the wall clock, turned into this machine's
  monotonic clock here).

A shown picture is matched to the latest sending of its number before it was shown. It is corrupt
when unreadable (a decoder's output from lost references), unmatched, or sent more than
``BACKWARDS_SLACK`` before a picture the same process showed before it (gone backwards: judged per
kiosk media child, since during a rebuild two of them show the page's video at once); live when
clean and sent less than ``LIVE_SECONDS`` before it was shown (not the backlog a frozen TURN
server releases).
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2

from tests.support.bench_tap import frame_tap, tap_env

KIOSK_SIDE = "kiosk"
VIDEO_FRAMES = 600  # 20 s at 30 fps: longer than any outage, a stale picture is never taken for a new one
LIVE_SECONDS = 0.5
BACKWARDS_SLACK = 0.1  # two kiosk children send the same numbers at once during a rebuild
UNREADABLE = -1
POLL_SECONDS = 0.1  # the kiosk's frames are only in its log files: read again this often


def write_numbered_video(path: Path, width: int = 640, height: int = 480) -> Path:
    """A lossless FFV1 file whose picture i shows i (the kiosk's camera, looped by the child)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"FFV1"), 30.0, (width, height))
    assert writer.isOpened(), f"OpenCV cannot write FFV1 video to {path}"
    try:
        for number in range(VIDEO_FRAMES):
            writer.write(frame_tap().draw(number, width, height))
    finally:
        writer.release()
    return path


def kiosk_tap_env(directory: Path) -> dict[str, str]:
    """What the kiosk's media children need in their environment to log their frames into
    ``directory``."""
    return tap_env(directory, KIOSK_SIDE)


def wall_to_monotonic() -> float:
    """Add to a wall-clock time (s) to get this machine's monotonic time."""
    return time.monotonic() - time.time()


@dataclass(frozen=True)
class Shown:
    at: float  # monotonic
    sent_at: float | None
    corrupt: bool

    @property
    def live(self) -> bool:
        return not self.corrupt and self.sent_at is not None and self.at - self.sent_at < LIVE_SECONDS


def matched(shown: list[tuple[int, float]], sent: list[tuple[int, float]]) -> list[Shown]:
    times: dict[int, list[float]] = {}
    for number, at in sent:
        times.setdefault(number, []).append(at)
    for moments in times.values():
        moments.sort()
    result: list[Shown] = []
    newest = float("-inf")
    for number, at in sorted(shown, key=lambda item: item[1]):
        candidates = times.get(number, []) if number != UNREADABLE else []
        index = bisect.bisect_right(candidates, at) - 1
        sent_at = candidates[index] if index >= 0 else None
        corrupt = sent_at is None or sent_at < newest - BACKWARDS_SLACK
        if sent_at is not None:
            newest = max(newest, sent_at)
        result.append(Shown(at, sent_at, corrupt))
    return result


@dataclass
class Logs:
    sent: list[tuple[int, float]] = field(default_factory=list)
    shown: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # per process


class LiveVideo:
    """Both sides' frame logs, read as they grow: the page's through ``page_log``, the kiosk's from
    its children's tap files in ``taps``."""

    def __init__(self, page_log: Callable[..., Any], taps: Path) -> None:
        self._page_log = page_log
        self._taps = taps
        self._page = Logs()
        self._kiosk = Logs()
        self._page_positions = {"sentFrom": 0, "shownFrom": 0}
        self._file_positions: dict[Path, int] = {}

    async def refresh(self) -> None:
        log = await self._page_log(**self._page_positions)
        offset = wall_to_monotonic()
        self._page.sent.extend((int(n), at / 1000 + offset) for n, at in log["sent"])
        page_shown = self._page.shown.setdefault("page", [])
        page_shown.extend((int(n), at / 1000 + offset) for n, at, _connection in log["shown"])
        self._page_positions = {"sentFrom": log["sentEnd"], "shownFrom": log["shownEnd"]}
        await asyncio.to_thread(self._read_taps)

    def _read_taps(self) -> None:
        for path in sorted(self._taps.glob(f"{KIOSK_SIDE}-*.tap")):
            with path.open("rb") as file:
                file.seek(self._file_positions.get(path, 0))
                data = file.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
            self._file_positions[path] = self._file_positions.get(path, 0) + len(complete)
            shown = self._kiosk.shown.setdefault(path.name, [])
            for line in complete.decode().splitlines():
                kind, number, at = line.split()
                (self._kiosk.sent if kind == "s" else shown).append((int(number), float(at)))

    def sides(self) -> dict[str, list[Shown]]:
        """What each side showed (each process apart), matched to what the other sent."""

        def side(shown: Logs, sent: Logs) -> list[Shown]:
            items = [item for stream in shown.shown.values() for item in matched(stream, sent.sent)]
            return sorted(items, key=lambda item: item.at)

        return {"browser": side(self._page, self._kiosk), "kiosk": side(self._kiosk, self._page)}

    def first_live(self, after: float) -> dict[str, float | None]:
        """Per side, seconds from ``after`` to the first live picture shown since, or None."""
        found: dict[str, float | None] = {}
        for side, items in self.sides().items():
            live = next((item.at for item in items if item.at >= after and item.live), None)
            found[side] = None if live is None else live - after
        return found

    def live_count(self, after: float) -> dict[str, int]:
        sides = self.sides().items()
        return {side: sum(item.live for item in items if item.at >= after) for side, items in sides}

    def corrupt(self, since: float) -> dict[str, int]:
        sides = self.sides().items()
        return {side: sum(item.corrupt for item in items if item.at >= since) for side, items in sides}

    async def until(self, reached: Callable[[], bool], within: float, what: str) -> None:
        """Read both logs again every ``POLL_SECONDS`` until ``reached()`` or ``within`` seconds."""
        deadline = time.monotonic() + within
        while True:
            await self.refresh()
            if reached():
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"{what}: not within {within:g} s; {self.summary()}")
            await asyncio.sleep(POLL_SECONDS)  # the next look at the logs, not a wait for something

    async def live_both_ways(self, after: float, within: float, frames: int = 30) -> float:
        """Until each side has shown ``frames`` live pictures since ``after``; the seconds from
        ``after`` to the later of the two sides' first live picture."""
        await self.until(
            lambda: min(self.live_count(after).values()) >= frames,
            within,
            f"{frames} live frames both ways",
        )
        firsts = self.first_live(after)
        assert None not in firsts.values(), firsts
        return max(value for value in firsts.values() if value is not None)

    def summary(self) -> str:
        return ", ".join(
            f"{side}: {len(items)} shown, {sum(i.live for i in items)} live, "
            f"{sum(i.corrupt for i in items)} corrupt, last shown {lags(items[-5:])} s after sending"
            for side, items in self.sides().items()
        )


def lags(items: list[Shown]) -> str:
    """How late the given pictures were shown (what a failure needs: stale or gone)."""
    return "/".join("?" if i.sent_at is None else f"{i.at - i.sent_at:.2f}" for i in items) or "none"
