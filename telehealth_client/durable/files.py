"""Small files written so that a power cut leaves the old one or the new one, never half of one.

Public API (synchronous: call from the event loop with ``asyncio.to_thread``):
``write_atomically(path, body)`` (beside it, mode 0600, flushed, renamed over it, the directory
flushed); ``make_private_directory(directory)`` (it and each missing parent 0700);
``read_if_present(path, what) -> bytes | None`` (None when there is none or it cannot be
read: logged by path and reason, ``what`` naming it); ``fsync_directory(directory)``; ``disk``,
the operating system calls that make a write durable (a test puts a recorder in front of them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class DiskCalls:
    """The calls that make a write durable, in one place: a test puts a recorder in front of them
    (each still made) to prove a file is flushed before its rename and its directory after. Only
    the durability tests replace it; production uses the operating system's calls as they are."""

    fsync: Callable[[int], None] = staticmethod(os.fsync)
    replace: Callable[[str, Path], None] = staticmethod(os.replace)


disk = DiskCalls()


def write_atomically(path: Path, body: bytes) -> None:
    """``path`` holds ``body`` or what it held before, never half of it, also after a power loss:
    written beside it (mode 0600), flushed, renamed over it, the directory flushed."""
    directory = path.parent
    # mkstemp creates the file 0600 and unique, in the same directory so the rename is atomic.
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(body)
            handle.flush()
            disk.fsync(handle.fileno())
        disk.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    fsync_directory(directory)


def make_private_directory(directory: Path) -> None:
    """``directory`` and every missing parent created owner-only (``mkdir(parents=True)`` would give
    the parents the umask's mode: a consultation's ID in a directory name is for this user alone)."""
    missing = [level for level in (directory, *directory.parents) if not level.exists()]
    for level in reversed(missing):
        level.mkdir(mode=0o700, exist_ok=True)


def read_if_present(path: Path, what: str) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("%s unreadable file=%s reason=%s", what, path, type(exc).__name__)
        return None


def fsync_directory(directory: Path) -> None:
    # The rename (or unlink) is durable only once the directory entry itself is on disk.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        disk.fsync(fd)
    finally:
        os.close(fd)
