"""What ``/proc`` says of an agent and its media children (resident memory, open descriptors,
threads), and the growth per consultation fitted by least squares."""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.support.run_agent import descendants, rss_mb


@dataclass(frozen=True)
class Usage:
    rss_mb: float
    fds: int
    threads: int


def usage(pid: int) -> Usage:
    """One process's usage (zeros once it is gone)."""
    fds = threads = 0
    with contextlib.suppress(OSError):
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
    return Usage(round(rss_mb(pid), 2), fds, threads)


def agent_usage(pid: int) -> dict[str, Any]:
    """The agent's own usage (with its ``pid``: a killed agent's successor starts a new series) and
    its media children's together (``children``: how many)."""
    children = [usage(child) for child in descendants(pid)]
    return {
        "agent": {**asdict(usage(pid)), "pid": pid},
        "media": {
            "rss_mb": round(sum(c.rss_mb for c in children), 2),
            "fds": sum(c.fds for c in children),
            "threads": sum(c.threads for c in children),
            "children": len(children),
        },
    }


def slope(values: list[float]) -> float | None:
    """The least-squares growth per step of ``values`` (one per consultation); None below two."""
    n = len(values)
    if n < 2:
        return None
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    spread = sum((x - mean_x) ** 2 for x in range(n))
    return sum((x - mean_x) * (y - mean_y) for x, y in enumerate(values)) / spread


def judged_window(values: list[tuple[int, float]], warm_up: int) -> list[float]:
    """The values of ``(pid, value)`` that growth is judged on: the longest run of one process,
    without its first ``warm_up`` (a process loads its libraries and caches in its first
    consultations: the device check's OpenCV, the first call's codecs)."""
    runs: list[list[float]] = []
    last_pid = None
    for pid, value in values:
        if pid != last_pid:
            runs.append([])
            last_pid = pid
        runs[-1].append(value)
    longest = max(runs, key=len, default=[])
    return longest[warm_up:] if len(longest) > warm_up + 1 else longest[1:]
