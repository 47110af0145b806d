"""The call's one status: folded from the events its parts emit, told only when it changed."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from telehealth_client import events
from telehealth_client.media.call_status import CallStatusTracker, CallView, derive, fold

CID = "c-1"


def statuses(sequence: Iterable[events.Event]) -> list[str]:
    """What a user watching ``call-status`` saw for ``sequence``."""
    told: list[events.Event] = []

    class Sink:
        def emit(self, event: events.Event) -> None:
            told.append(event)

    tracker = CallStatusTracker(Sink(), CID)
    for event in sequence:
        tracker.emit(event)
    assert [e for e in told if not isinstance(e, events.CallStatusChanged)] == list(sequence)
    told_statuses = [e for e in told if isinstance(e, events.CallStatusChanged)]
    assert all(a != b for a, b in itertools.pairwise(told_statuses)), "a status told twice"
    return [e.status for e in told_statuses]


def phase(name: str, reason: str | None = None) -> events.CallStateChanged:
    return events.CallStateChanged(CID, name, reason)


def flowing(kind: str) -> events.MediaFlowing:
    return events.MediaFlowing(CID, kind)


STALL = events.MediaFailed(CID, "network", "media stalled")


def test_a_call_connects_goes_live_recovers_and_ends_each_told_once() -> None:
    sequence = [
        phase("answering"),
        phase("connected"),
        flowing("audio"),
        flowing("video"),
        events.CallQualityChanged(CID, 5, 10.0, 1.0, 0.0, 30.0, 640, 480, 500.0, 500.0, None),
        STALL,
        flowing("audio"),  # audio back first: a call with video is back with its video
        flowing("video"),
        phase("ended", "hangup"),
    ]
    # Each change told once; "live" again when video joined its audio (media: what arrives now).
    assert statuses(sequence) == ["connecting", "live", "live", "recovering", "recovering", "live", "ended"]


def test_a_call_without_video_is_live_on_its_audio() -> None:
    assert statuses([phase("offering"), phase("connected"), flowing("audio")]) == ["connecting", "live"]
    assert statuses([phase("offering"), flowing("audio"), STALL, flowing("audio")]) == [
        "connecting",
        "live",
        "recovering",
        "live",
    ]


def test_audio_only_is_its_own_status_and_audio_alone_carries_it() -> None:
    video_off = events.CallVideoModeChanged(CID, "audio-only", "network")
    video_on = events.CallVideoModeChanged(CID, "video", "network")
    sequence = [phase("offering"), flowing("video"), flowing("audio"), video_off, STALL, flowing("audio")]
    assert statuses(sequence) == ["connecting", "live", "live", "audio-only", "recovering", "audio-only"]
    # Video on again (both ends): live, on the connection that carried video before (the children
    # tell no new first frame for it); never "recovering" while audio flows.
    assert statuses([*sequence, video_on])[-1] == "live"
    assert statuses([phase("offering"), flowing("video"), flowing("audio"), video_off, video_on]) == [
        "connecting",
        "live",
        "live",
        "audio-only",
        "live",
    ]
    view = CallView()
    for event in (phase("offering"), flowing("video"), flowing("audio"), video_off):
        view = fold(view, event)
    assert derive(view, CID).media == ("audio",)  # no video arrives in an audio-only call


def test_a_lost_device_is_listed_and_the_call_stays_live() -> None:
    view = CallView()
    for event in (
        phase("answering"),
        flowing("audio"),
        flowing("video"),
        events.MediaFailed(CID, "video", "gone"),
    ):
        view = fold(view, event)
    status = derive(view, CID)
    assert status == events.CallStatusChanged(CID, "live", media=("audio", "video"), lost_devices=("video",))


def test_a_failed_call_says_why_and_a_new_call_starts_afresh() -> None:
    sequence = [
        phase("answering"),
        flowing("video"),
        events.MediaFailed(CID, "audio", "the microphone failed"),
        STALL,
        phase("failed", "the other side did not answer our offers"),
    ]
    view = CallView()
    for event in sequence:
        view = fold(view, event)
    # Over: the call's lost devices go with it.
    assert derive(view, CID) == events.CallStatusChanged(
        CID, "failed", reason="the other side did not answer our offers"
    )
    again = fold(view, phase("answering"))
    assert again == CallView(phase="answering")
    assert derive(again, CID).status == "connecting"
    assert statuses([*sequence, phase("answering"), flowing("video")])[-2:] == ["connecting", "live"]
    # An answer's step may go on to "connected" before its phase is told: a new call all the same.
    assert fold(view, phase("connected")) == CallView(phase="connected")


def test_a_device_lost_while_the_call_was_prepared_is_the_call_s_from_its_start() -> None:
    """The prepared child opens the camera before the call's phase is told: its failure is told
    first, and must not be forgotten when the call begins (nor shown as a status while idle)."""
    camera_gone = events.MediaFailed(CID, "video", "the camera cannot be opened")
    assert statuses([camera_gone]) == []
    told: list[events.CallStatusChanged] = []

    class Sink:
        def emit(self, event: events.Event) -> None:
            if isinstance(event, events.CallStatusChanged):
                told.append(event)

    tracker = CallStatusTracker(Sink(), CID)
    for event in (camera_gone, phase("connected"), flowing("audio"), flowing("video")):
        tracker.emit(event)
    assert [(e.status, e.lost_devices) for e in told] == [
        ("connecting", ("video",)),
        ("live", ("video",)),
        ("live", ("video",)),
    ]


def test_events_of_another_consultation_are_not_this_call_s() -> None:
    other = "c-2"
    assert statuses([phase("offering"), flowing("video"), events.MediaFailed(other, "network", "stall")]) == [
        "connecting",
        "live",
    ]


def test_events_of_other_consultation_parts_change_nothing() -> None:
    view = fold(CallView(phase="connected"), events.ChatWiped(CID))
    assert view == CallView(phase="connected")
    assert statuses([events.ChatWiped(CID), events.AccessRenewed()]) == []
