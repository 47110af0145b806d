"""The patient's media moves the consultation to in-progress, once: video and audio each report
that they flow (the call gives each to the provider as its own task), and the second report must
not try the same start again (the lifecycle would refuse it: a warning in the log, and in the
demo). Real relay, clinic stand-in and endpoints; the two reports are the call's callback, given
to the provider directly at the same moment, as the call's two tasks give them."""

from __future__ import annotations

import asyncio

import pytest

from telehealth_client import events
from telehealth_client.protocol.messages import ConsultationState as S
from tests.support.consultation import CONSULTATION, Parts, check_in_and_join
from tests.support.logs import LogLines

pytestmark = pytest.mark.integration


async def test_video_and_audio_arriving_together_start_the_consultation_once(
    parts: Parts, log_lines: LogLines
) -> None:
    provider_hub, patient_hub, provider, patient = await parts.consented_pair()
    await check_in_and_join(patient, provider, patient_hub, provider_hub)

    media_flowing = provider._own._media_flowing  # the call's on_media_flowing, for each kind
    await asyncio.gather(media_flowing(CONSULTATION), media_flowing(CONSULTATION))

    await patient_hub.wait_state(S.IN_PROGRESS)
    started = [
        e for e in provider_hub.items if isinstance(e, events.StateChanged) and e.state is S.IN_PROGRESS
    ]
    assert len(started) == 1
    assert provider.session(CONSULTATION).consultation.state is S.IN_PROGRESS
    assert not [line for line in log_lines.lines if "not started on media" in line], log_lines.lines
