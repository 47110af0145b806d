"""Video previews' parts without a call: the child encodes only while some side is watched and only
new frames (``PreviewPump`` with the real JPEG encoder), the agent's side counts its watchers and
asks the child only when the watched set changes (``PreviewFeed``), the messages between them, and
the routes in the OpenAPI document."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import cv2
import numpy as np
import pytest

from telehealth_client.api import ROUTES
from telehealth_client.api.openapi import openapi_document
from telehealth_client.media.child_messages import (
    PreviewImage,
    RequestError,
    WatchPreviews,
    parse_event,
    parse_request,
)
from telehealth_client.media.previews import PreviewFeed, PreviewPump
from telehealth_client.media.tracks import encode_preview

WAIT = 10.0


def image(value: int) -> np.ndarray[Any, Any]:
    picture = np.zeros((480, 640, 3), np.uint8)
    cv2.putText(picture, str(value), (100, 300), cv2.FONT_HERSHEY_SIMPLEX, 6, (255, 255, 255), 12)
    return picture


class Frames:
    """A source whose frame changes when the test says so (numbered like the child's)."""

    def __init__(self) -> None:
        self.number = 0
        self.frame: Any = None

    def next(self) -> None:
        self.number += 1
        self.frame = image(self.number)

    def __call__(self, side: str) -> tuple[int, Any]:
        return (self.number, self.frame) if side == "remote" else (0, None)


class Sent:
    def __init__(self) -> None:
        self.images: list[PreviewImage] = []
        self.changed = asyncio.Event()

    def __call__(self, event: PreviewImage) -> None:
        self.images.append(event)
        self.changed.set()

    async def until(self, count: int) -> None:
        async def enough() -> None:
            while len(self.images) < count:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(enough(), WAIT)


async def test_the_pump_encodes_nothing_unwatched_and_each_new_frame_once() -> None:
    frames, sent = Frames(), Sent()
    encoded: list[int] = []

    def encode(frame: Any, width: int) -> bytes | None:
        encoded.append(width)
        return encode_preview(frame, width)

    pump = PreviewPump(frames, encode, sent)
    try:
        frames.next()
        pump.watch((), 8.0, 160)
        assert pump.sides == () and encoded == []
        pump.watch(("remote", "local"), 15.0, 160)
        assert pump.sides == ("local", "remote")
        await sent.until(1)
        first = sent.images[0]
        assert (first.side, first.seq) == ("remote", 1)
        picture = cv2.imdecode(np.frombuffer(base64.b64decode(first.jpeg), np.uint8), cv2.IMREAD_COLOR)
        assert picture.shape == (120, 160, 3)
        frames.next()  # a new frame: sent once, numbered on
        await sent.until(2)
        assert [i.seq for i in sent.images] == [1, 2]
        assert len(encoded) == 2  # the same frame is not encoded again, the missing local side never
        pump.watch((), 8.0, 160)
        frames.next()
        assert pump.sides == ()
    finally:
        await pump.aclose()
    assert len(sent.images) == 2


async def test_the_feed_asks_the_child_only_when_the_watched_sides_change() -> None:
    feed = PreviewFeed()
    assert feed.watch("remote") == ("remote",)
    assert feed.watch("remote") is None  # a second watcher: nothing to ask
    assert feed.watch("local") == ("local", "remote")
    assert feed.unwatch("remote") is None
    assert feed.unwatch("remote") == ("local",)
    assert feed.unwatch("local") == ()
    assert feed.unwatch("local") is None  # never below zero


async def test_the_feed_keeps_the_newest_watched_image_and_wakes_its_waiter() -> None:
    feed = PreviewFeed()
    jpeg = encode_preview(image(7), 160)
    assert jpeg is not None
    message = PreviewImage(side="remote", seq=1, jpeg=base64.b64encode(jpeg).decode())
    feed.received(message)
    assert feed.latest("remote") is None  # nobody watches: dropped
    feed.watch("remote")
    waiter = asyncio.ensure_future(feed.next_after("remote", 0, WAIT))
    feed.received(message)
    assert await waiter == (1, jpeg)
    assert await feed.next_after("remote", 1, 0.01) is None  # nothing newer
    feed.received(PreviewImage(side="remote", seq=2, jpeg="not base64!"))
    assert feed.latest("remote") == (1, jpeg)  # a broken image is dropped
    feed.unwatch("remote")
    assert feed.latest("remote") is None  # not shown to the next watcher


def test_the_preview_messages_are_checked_both_ways() -> None:
    request = parse_request({"id": 3, "op": "watch-previews", "sides": ["remote"], "per_second": 8})
    assert request == WatchPreviews(id=3, sides=("remote",), per_second=8.0)
    for wrong, field in (
        ({"sides": ["front"]}, "watch-previews.sides.0"),
        ({"per_second": 60}, "watch-previews.per_second"),
        ({"width": 8}, "watch-previews.width"),
    ):
        with pytest.raises(RequestError) as caught:
            parse_request({"id": 4, "op": "watch-previews", **wrong})
        assert caught.value.field == field
    event = parse_event({"event": "preview", "side": "local", "seq": 1, "jpeg": "AAAA"})
    assert event == PreviewImage(side="local", seq=1, jpeg="AAAA")


def test_the_preview_routes_are_documented_as_mjpeg_behind_the_token() -> None:
    paths = openapi_document(ROUTES)["paths"]
    for side in ("local", "remote"):
        operation = paths[f"/v1/previews/{side}"]["get"]
        assert list(operation["responses"]["200"]["content"]) == [
            "multipart/x-mixed-replace; boundary=preview"
        ]
        assert {"401", "409", "503"} <= set(operation["responses"])
    assert "get" in paths["/v1/previews"]
