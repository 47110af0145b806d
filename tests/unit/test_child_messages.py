"""The agent-child messages (media/child_messages.py): every request and event is a model; what
is not one is refused naming the field; the wire shape stays what the child reads."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from telehealth_client.media.child_messages import (
    AddCandidate,
    DeviceChoice,
    Fallback,
    FirstFrame,
    Heartbeat,
    MakeAnswer,
    Reply,
    RequestError,
    Start,
    TurnServers,
    parse_event,
    parse_request,
)
from telehealth_client.media.common import TurnConfig
from telehealth_client.media.fallback import FallbackSettings
from telehealth_client.protocol.messages import IceCandidate

TURN = TurnConfig(("turn:127.0.0.1:3478?transport=udp",), "1700000000:pat-1", "c2VjcmV0")


def wire(request: object) -> dict[str, object]:
    """What the agent's handle writes (media/worker.py ``_request``)."""
    return json.loads(json.dumps(request.model_dump(mode="json", by_alias=True)))  # type: ignore[attr-defined]


def test_a_start_goes_over_the_wire_and_back_whole() -> None:
    start = Start(
        id=7,
        turn=TurnServers.of(TURN),
        devices=DeviceChoice(camera="/dev/video0", microphone="default"),
        video_mode="audio-only",
        fallback=Fallback.of(FallbackSettings(poor_samples=3)),
    )
    back = parse_request(wire(start))
    assert back == start and isinstance(back, Start)
    assert back.turn.config() == TURN
    assert back.fallback is not None and back.fallback.settings() == FallbackSettings(poor_samples=3)


def test_a_candidate_travels_in_the_browsers_shape() -> None:
    candidate = IceCandidate(candidate="candidate:1 1 udp 1 10.0.0.1 5000 typ relay", sdp_mid="0")
    sent = wire(AddCandidate(id=3, candidate=candidate))
    assert sent["candidate"] == {
        "candidate": candidate.candidate,
        "sdpMid": "0",
        "sdpMLineIndex": None,
        "usernameFragment": None,
    }
    back = parse_request(sent)
    assert isinstance(back, AddCandidate) and back.candidate == candidate


@pytest.mark.parametrize(
    ("line", "request_id", "field"),
    [
        ({"id": 1, "op": "answer"}, 1, "answer.sdp"),
        ({"id": 2, "op": "launch"}, 2, "op"),  # no such request
        ({"id": 3}, 3, "op"),  # no op at all
        ({"id": 4, "op": "video-mode", "mode": "hologram"}, 4, "video-mode.mode"),
        ({"id": 5, "op": "offer", "sdp": "v=0"}, 5, "offer.sdp"),  # a field no offer has
        ({"id": "x", "op": "offer"}, None, "offer.id"),
        ("offer", None, "request"),
    ],
)
def test_what_is_no_request_is_refused_naming_the_field(
    line: object, request_id: int | None, field: str
) -> None:
    with pytest.raises(RequestError) as refused:
        parse_request(line)
    assert refused.value.request_id == request_id
    assert refused.value.field == field and refused.value.reason


def test_a_start_with_settings_that_cannot_be_is_refused_by_the_child() -> None:
    start = parse_request(
        wire(
            Start(
                id=1,
                turn=TurnServers.of(TURN),
                devices=DeviceChoice(),
                fallback=Fallback(poor_level=4, good_level=3, poor_samples=1, good_samples=1),
            )
        )
    )
    assert isinstance(start, Start) and start.fallback is not None
    with pytest.raises(ValueError, match="levels"):
        start.fallback.settings()
    with pytest.raises(RequestError) as refused:
        parse_request({**wire(start), "turn": {"urls": [], "username": "u", "credential": "c"}})
    assert refused.value.field == "start.turn.urls"


def test_replies_keep_their_ops_fields() -> None:
    reply = Reply.model_validate({"id": 4, "ok": True, "sdp": "v=0\r\n"})
    assert reply.ok and reply.field("sdp") == "v=0\r\n" and reply.field("missing") is None
    refused = Reply.model_validate({"id": 5, "ok": False, "code": "sdp", "reason": "no media section"})
    assert (refused.code, refused.reason) == ("sdp", "no media section")
    assert parse_request(wire(MakeAnswer(id=9, sdp="v=0"))) == MakeAnswer(id=9, sdp="v=0")


def test_events_are_told_apart_and_a_bad_one_is_refused() -> None:
    assert parse_event({"event": "first-frame", "kind": "video"}) == FirstFrame(kind="video")
    assert parse_event({"event": "heartbeat", "rss_kb": 151_000}) == Heartbeat(rss_kb=151_000)
    for bad in (
        {"event": "first-frame", "kind": "smell"},
        {"event": "heartbeat", "rss_kb": -1},
        {"event": "quality", "level": 9},
        {"event": "teleport"},
        {"kind": "video"},
    ):
        with pytest.raises(ValidationError):
            parse_event(bad)
