"""Fixtures for emergency escalation on the real development stack: three providers of one
department (all on call unless a test changes the clinic's roster), each a real
``ProviderEndpoint`` with its own outbox and audit trail, and raw buses that read a provider's
notification channel with that provider's own standing token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telehealth_devstack.stack import DevStack
from tests.support.emergency import (
    ON_CALL,
    EmergencyParts,
)


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=ON_CALL) as running:
        yield running


@pytest.fixture
async def parts(stack: DevStack, tmp_path: Path) -> AsyncIterator[EmergencyParts]:
    built = EmergencyParts(stack, tmp_path)
    yield built
    await built.aclose()
