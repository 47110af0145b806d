"""Fixtures for the PHI canary and wire-encryption tests: the real development stack keeping its
state on disk (so the relay's and the clinic's files can be searched too), marker PHI strings,
and searches of files, log records and wire payloads for them.

A marker is searched as raw bytes and in its base64 forms (all three alignments), so PHI stored
"encoded" instead of encrypted is found as well.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from telehealth_devstack.stack import DevStack, DevStackKeys
from tests.support.consultation import PROVIDER, SPECIALIST, Parts
from tests.support.logs import attached
from tests.support.phi import (
    CapturedLogs,
)


@pytest.fixture
def captured_logs() -> Iterator[CapturedLogs]:
    """Our loggers at DEBUG, captured at the root (third-party records that reach it too)."""
    with attached(CapturedLogs(), "telehealth_client", on="") as handler:
        yield handler


@pytest.fixture
async def kept_stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    """The development stack with its relay and clinic state on disk under ``tmp_path/stack``."""
    state_dir = tmp_path / "stack"
    state_dir.mkdir(mode=0o700)
    keys = DevStackKeys.load_or_create(state_dir / "keys.json")
    async with DevStack(keys=keys, state_dir=state_dir, providers=(PROVIDER, SPECIALIST)) as running:
        yield running


@pytest.fixture
async def kept_parts(kept_stack: DevStack, tmp_path: Path) -> AsyncIterator[Parts]:
    built = Parts(kept_stack, tmp_path / "agents")
    yield built
    await built.aclose()
