"""Fixtures for the audit trail on the real development stack: the clinic stand-in's audit sink
(reached through a real TCP hop that a test can cut) and the relay's ``audit.{org}`` channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telehealth_devstack.stack import DevStack
from tests.support.audit import Trails


@pytest.fixture
async def trails(stack: DevStack, tmp_path: Path) -> AsyncIterator[Trails]:
    built = Trails(stack, tmp_path)
    yield built
    await built.aclose()
