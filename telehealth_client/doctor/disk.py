"""Check 9: free space on the file system of ``state_dir`` (the audit trail, the outboxes, the
consultation's state). Blocking (``statvfs``): run it in a thread."""

from __future__ import annotations

import shutil
from pathlib import Path

from telehealth_client.doctor.report import Result, failed, passed, warned

NAME = "disk"
MB = 1024 * 1024
# An outbox or the audit trail that cannot be written stops the consultation: far before full.
FAIL_BELOW = 200 * MB
WARN_BELOW = 1024 * MB


def existing(path: Path) -> Path:
    """``path``, or the nearest of its parents that exists (systemd creates state_dir at start)."""
    return next(candidate for candidate in (path, *path.parents) if candidate.exists())


def size(count: int) -> str:
    return f"{count / MB:.0f} MB" if count < 10 * 1024 * MB else f"{count / (1024 * MB):.0f} GB"


def judge_free(state_dir: Path, measured_at: Path, free: int, total: int) -> Result:
    """Pure: the verdict on ``free`` of ``total`` bytes where ``state_dir`` is (or will be)."""
    where = (
        str(state_dir)
        if measured_at == state_dir
        else f"{state_dir} (not there yet; measured at {measured_at})"
    )
    said = f"{size(free)} free of {size(total)} at {where}"
    if free < FAIL_BELOW:
        return failed(NAME, f"{said}: under {FAIL_BELOW // MB} MB; free some space on that file system")
    if free < WARN_BELOW:
        return warned(NAME, f"{said}: under {WARN_BELOW // MB} MB; free some space soon")
    return passed(NAME, said)


def check_disk(state_dir: Path) -> Result:
    measured_at = existing(state_dir.absolute())
    usage = shutil.disk_usage(measured_at)
    return judge_free(state_dir, measured_at, usage.free, usage.total)
