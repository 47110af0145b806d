"""A file only its owner can read, for the development stack's secrets (keys, coturn's options).

Public API: ``write_private(path, data)``: creates ``path`` mode 0600 before anything is written
into it (never readable by others, not even for a moment); an existing file is an error.
Blocking: not on the event loop.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
