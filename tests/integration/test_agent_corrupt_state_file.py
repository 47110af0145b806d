"""The agent started on a consultation state file that is corrupt: it says which file and why (never
what it holds), and does not start on it. Found by starting the agent from outside; the real
development stack (relay, clinic stand-in, coturn) runs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telehealth_client.agent import CONSULTATION_STATE_DIR, Agent
from telehealth_client.config import load_settings
from telehealth_client.consultation.state_file import FILE_NAME
from telehealth_devstack.stack import DevStack

pytestmark = pytest.mark.integration

MARKER = "PHI-MARKER-5521"  # what the corrupt file holds: never logged


@pytest.fixture
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack() as running:
        yield running


async def test_a_corrupt_consultation_state_file_is_logged_with_its_path_and_reason(
    stack: DevStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Defect: the kiosk logged only "saved consultation not resumed error=StateFileError" and
    # said it was idle: whoever is on call learned neither which file nor what is wrong with it.
    state_dir = tmp_path / "kiosk"
    saved = state_dir / CONSULTATION_STATE_DIR / FILE_NAME
    saved.parent.mkdir(parents=True)
    saved.write_text('{"version": 1, "note": "' + MARKER)
    agent = Agent(
        load_settings(environ={**stack.agent_environment(), "TELEHEALTH_STATE_DIR": str(state_dir)})
    )
    with caplog.at_level(logging.INFO, logger="telehealth_client"):
        try:
            assert await agent.start() == "idle"
        finally:
            await agent.aclose()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [
        f"saved consultation not resumed error=StateFileError file={saved} reason=is corrupt (not valid JSON)"
    ]
    assert saved.read_text().endswith(MARKER)  # kept for the next start, or for someone to look at
    assert not [r for r in caplog.records if MARKER in r.getMessage()]
