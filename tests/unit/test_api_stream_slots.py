"""StreamSlots: at most ``limit`` held at once, a refusal holds nothing, and a slot comes back
however its stream ends (an error included)."""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from telehealth_client.api.errors import ApiError
from telehealth_client.api.stream_slots import StreamSlots


def test_beyond_the_limit_is_503_too_many_streams_and_holds_nothing() -> None:
    slots = StreamSlots("event", limit=2)
    with ExitStack() as held:
        held.enter_context(slots.held())
        held.enter_context(slots.held())
        with pytest.raises(ApiError) as refused:
            held.enter_context(slots.held())
        assert (refused.value.status, refused.value.code) == (503, "too-many-streams")
        assert "2 event streams" in refused.value.message
        assert slots.open == 2
    assert slots.open == 0


def test_a_stream_that_fails_gives_its_slot_back() -> None:
    slots = StreamSlots("preview", limit=1)
    with pytest.raises(ConnectionResetError), slots.held():
        raise ConnectionResetError
    with slots.held():
        assert slots.open == 1
