"""One status for a call, derived in one place from the events its parts emit, told only on change.

The call's parts each say what they know: the negotiation its phase (``call-state``), the
connections which media flows or stopped (``media-flowing``, ``media-failed``), the patient's
child whether the path carries video (``call-video-mode``). A user interface wants one answer:
``CallStatusTracker`` sits between the call and the hub, passes every event on, folds the call's
into a ``CallView`` (pure: ``fold``) and emits ``CallStatusChanged`` when ``derive`` of it changed.

Statuses: ``idle`` (no call), ``connecting`` (offered or answered, no media yet), ``live`` (the far
end's media arrives: its first media, often audio a moment before video, then after a stall its
video again, or its audio in a call that has had no video), ``audio-only`` (the path cannot carry
video: audio alone; back to ``live`` when both ends turn video on again), ``recovering`` (the media
stopped; a rebuild is under way while the old connection stays up), ``ended`` and ``failed`` (with
the reason). ``media``: the far end's kinds that have arrived since the call (re)connected (a stall
empties it, audio only takes video out of it until video is turned on again; the call's children
tell when media stops, not when one kind of it pauses). A device of this end that failed is listed
in ``lost_devices`` for the rest of the call (one that failed while the call was being prepared, for
the call it was prepared for): the call goes on without it.

Public API: ``CallView``, ``fold(view, event)``, ``derive(view, consultation_id)``, ``CallStatusTracker(hub,
consultation_id)`` with ``emit(event)`` and ``status``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, cast

from telehealth_client import events

DEVICE_SOURCES: Final = frozenset({"video", "audio", "speaker"})
OVER_PHASES: Final = frozenset({"idle", "ended", "failed"})


@dataclass(frozen=True)
class CallView:
    """What the call's events said so far: the negotiation's phase, the far end's media arrived
    since the call (re)connected and ever in this call, the video mode, this end's lost devices,
    why it ended."""

    phase: str = "idle"
    media: frozenset[str] = frozenset()
    ever: frozenset[str] = frozenset()
    video_mode: str = "video"
    lost_devices: frozenset[str] = frozenset()
    reason: str | None = None


def fold(view: CallView, event: events.Event) -> CallView:
    """``view`` after ``event`` (events of other kinds leave it as it is)."""
    if isinstance(event, events.CallStateChanged):
        if event.phase not in OVER_PHASES and view.phase in OVER_PHASES:
            # A new call (its phase told once per step: an answer's may be "connected" at once):
            # nothing of the last one carries over but the devices that failed since it ended
            # (its child opens them before the call's phase is told).
            return CallView(phase=event.phase, lost_devices=view.lost_devices)
        if event.phase in OVER_PHASES:
            # Devices lost from now on belong to the next call.
            return replace(
                view, phase=event.phase, media=frozenset(), lost_devices=frozenset(), reason=event.reason
            )
        return replace(view, phase=event.phase)
    if isinstance(event, events.MediaFlowing):
        return replace(view, media=view.media | {event.media}, ever=view.ever | {event.media})
    if isinstance(event, events.MediaFailed):
        if event.source in DEVICE_SOURCES:
            return replace(view, lost_devices=view.lost_devices | {event.source})
        return replace(view, media=frozenset())
    if isinstance(event, events.CallVideoModeChanged):
        if event.mode == "audio-only":
            return replace(view, video_mode=event.mode, media=view.media - {"video"})
        # Video on again on both ends: the connection that carried it before carries it again (the
        # children tell no new "first frame" for it; a stall would, and empties ``media``).
        back = view.media | ({"video"} if "video" in view.ever and view.media else set())
        return replace(view, video_mode=event.mode, media=back)
    return view


def _carried(view: CallView) -> bool:
    """Whether the far end's media carries the call now: its video, unless the call has had no
    video (a kiosk without a camera) or goes on with audio alone."""
    if "video" in view.ever and view.video_mode == "video":
        return "video" in view.media
    return bool(view.media)


def derive(view: CallView, consultation_id: str) -> events.CallStatusChanged:
    """The status of ``consultation_id``'s call as ``view`` shows it."""
    status: events.CallStatus
    if view.phase in OVER_PHASES:
        status = cast(events.CallStatus, view.phase)
    elif not view.ever:
        status = "connecting"
    elif not _carried(view):
        status = "recovering"
    elif view.video_mode == "audio-only":
        status = "audio-only"
    else:
        status = "live"
    return events.CallStatusChanged(
        consultation_id=consultation_id,
        status=status,
        media=tuple(sorted(view.media)),
        # Shown during a call: one lost between calls is the next call's.
        lost_devices=() if view.phase in OVER_PHASES else tuple(sorted(view.lost_devices)),
        reason=view.reason if status in ("ended", "failed") else None,
    )


class CallStatusTracker:
    """The call's way to the hub: every event goes on as it is, and the call's status follows it
    when that changed."""

    def __init__(self, hub: events.EventSink, consultation_id: str) -> None:
        self._hub = hub
        self._cid = consultation_id
        self._view = CallView()
        self._status = derive(self._view, consultation_id)

    @property
    def status(self) -> events.CallStatusChanged:
        return self._status

    def emit(self, event: events.Event) -> None:
        self._hub.emit(event)
        if getattr(event, "consultation_id", self._cid) != self._cid:
            return  # another consultation's (none passes here today): not this call's
        self._view = fold(self._view, event)
        status = derive(self._view, self._cid)
        if status != self._status:
            self._status = status
            self._hub.emit(status)
