"""The outbox on disk: sealed, in order, restart-safe, wiped for real. Real SQLite, no bus."""

from __future__ import annotations

import logging
import sqlite3
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telehealth_client.consultation.outbox import Outbox, Outgoing
from telehealth_client.security.at_rest import Sealer

MARKER = "PHI-CANARY-b41c severe chest pain"
CONSULTATION = "consultation.dr-lee.pat-1"


def sealer(secret: str = "configured-cipher-key") -> Sealer:
    return Sealer(secret, purpose="outbox")


def chat(text: str = MARKER, consultation_id: str = CONSULTATION, **fields: object) -> Outgoing:
    item_id = str(uuid.uuid4())
    message = {"type": "chat", "id": item_id, "senderId": "pat-1", "text": text}
    channel = consultation_id or "notification.dr-lee"
    return Outgoing(item_id, consultation_id, channel, message, **fields)  # type: ignore[arg-type]


def raw_bytes(path: Path) -> bytes:
    """Everything SQLite keeps for the database: the file and its write-ahead log."""
    data = b""
    for name in (path.name, path.name + "-wal", path.name + "-journal"):
        if (path.parent / name).exists():
            data += (path.parent / name).read_bytes()
    return data


def stored_blobs(path: Path) -> list[bytes]:
    with sqlite3.connect(path) as db:
        return [bytes(row[0]) for row in db.execute("SELECT sealed FROM pending")]


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = Outbox(tmp_path / "outbox.sqlite3", sealer())
    await box.open()
    yield box
    await box.aclose()


async def test_put_stores_only_ciphertext_owner_only(outbox: Outbox, tmp_path: Path) -> None:
    item = chat(meta={"note": MARKER})
    await outbox.put(item)
    path = tmp_path / "outbox.sqlite3"
    data = raw_bytes(path)
    assert item.id.encode() in data  # the grep does see what is in clear: the IDs
    assert MARKER.encode() not in data
    assert (
        CONSULTATION.encode() + b'"' not in data
    )  # the channel is sealed too (the clear column has no quote)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert outbox.pending() == [item]


async def test_items_survive_a_reopen_in_order_and_a_repeated_id_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    first = Outbox(path, sealer())
    await first.open()
    items = [chat(f"message {n}") for n in range(5)]
    for item in items:
        await first.put(item)
    await first.put(Outgoing(items[2].id, CONSULTATION, CONSULTATION, {"type": "chat", "text": "other"}))
    assert first.pending() == items
    await first.aclose()

    again = Outbox(path, sealer())
    try:
        assert await again.open() == items
        assert again.pending(CONSULTATION) == items
        assert again.pending("consultation.dr-lee.pat-2") == []
    finally:
        await again.aclose()


async def test_a_rotated_secret_still_opens_what_the_old_one_sealed(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    old = Outbox(path, sealer("old-key"))
    await old.open()
    item = chat()
    await old.put(item)
    await old.aclose()
    rotated = Outbox(path, Sealer("new-key", ["old-key"], purpose="outbox"))
    try:
        assert await rotated.open() == [item]
    finally:
        await rotated.aclose()


async def test_wipe_removes_the_consultations_items_and_zeroes_them_on_disk(
    outbox: Outbox, tmp_path: Path
) -> None:
    path = tmp_path / "outbox.sqlite3"
    wiped = [chat(), chat()]
    kept = chat(consultation_id="consultation.dr-lee.pat-2")
    for item in (wiped[0], kept, wiped[1]):
        await outbox.put(item)
    blobs = {item.id: blob for item, blob in zip((wiped[0], kept, wiped[1]), stored_blobs(path), strict=True)}
    assert all(blob in raw_bytes(path) for blob in blobs.values())

    assert await outbox.wipe(CONSULTATION) == wiped
    assert outbox.pending() == [kept]
    data = raw_bytes(path)
    for item in wiped:
        assert blobs[item.id] not in data
        assert item.id.encode() not in data
    assert blobs[kept.id] in data
    assert MARKER.encode() not in data


async def test_a_blob_no_key_opens_is_set_aside_and_logged_by_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite3"
    writer = Outbox(path, sealer("key-one"))
    await writer.open()
    lost, moved = chat(), chat()
    await writer.put(lost)
    await writer.put(moved)
    await writer.aclose()
    with sqlite3.connect(path) as db:  # a blob moved to another consultation's row no longer opens
        db.execute("UPDATE pending SET consultation_id = 'consultation.dr-x.pat-9' WHERE id = ?", (moved.id,))

    caplog.set_level(logging.INFO, logger="telehealth_client")
    reader = Outbox(path, sealer("key-two"))
    try:
        assert await reader.open() == []
        assert reader.pending() == []
    finally:
        await reader.aclose()
    lines = [r.getMessage() for r in caplog.records if "set aside" in r.getMessage()]
    assert len(lines) == 2 and lost.id in lines[0] and moved.id in lines[1]
    assert all("key-one" not in line and "key-two" not in line and MARKER not in line for line in lines)

    # Kept aside, not deleted: the right key can still be brought to it.
    with sqlite3.connect(path) as db:
        assert {row[0] for row in db.execute("SELECT id FROM set_aside")} == {lost.id, moved.id}
    rightly = Outbox(path, sealer("key-one"))
    try:
        assert await rightly.open() == []  # set aside stays aside
    finally:
        await rightly.aclose()


async def test_a_wrong_key_does_not_stop_the_items_it_opens(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    one = Outbox(path, sealer("key-one"))
    await one.open()
    await one.put(chat())
    await one.aclose()
    two = Outbox(path, Sealer("key-two", purpose="outbox"))
    await two.open()
    readable = chat()
    await two.put(readable)
    await two.aclose()
    again = Outbox(path, sealer("key-two"))
    try:
        assert await again.open() == [readable]
    finally:
        await again.aclose()


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (Outgoing("", CONSULTATION, CONSULTATION, {}), "id: must not be empty"),
        (Outgoing("a\nb", CONSULTATION, CONSULTATION, {}), "id: must be printable ASCII"),
        (Outgoing("x" * 129, CONSULTATION, CONSULTATION, {}), "id: must be at most 128 characters"),
        (Outgoing("m-1", CONSULTATION, "", {}), "channel: must not be empty"),
        (Outgoing("m-1", CONSULTATION, CONSULTATION, ["no"]), "message: must be a dict, got list"),  # type: ignore[arg-type]
        (
            Outgoing("m-1", CONSULTATION, CONSULTATION, {"x": float("nan")}),
            "message: must be JSON-serialisable",
        ),
        (Outgoing("m-1", CONSULTATION, CONSULTATION, {"x": object()}), "message: must be JSON-serialisable"),
        (Outgoing("m-1", CONSULTATION, CONSULTATION, {}, meta="x"), "meta: must be a dict or None, got str"),  # type: ignore[arg-type]
        (Outgoing("m-1", CONSULTATION, CONSULTATION, {}, store=1), "store: must be a bool, got int"),  # type: ignore[arg-type]
        (Outgoing("m-1", CONSULTATION, CONSULTATION, {}, kind=""), "kind: must not be empty"),
        (Outgoing("m-1", 7, CONSULTATION, {}), "consultation_id: must be a string, got int"),  # type: ignore[arg-type]
    ],
)
async def test_bad_items_are_refused_naming_the_field_and_nothing_is_stored(
    outbox: Outbox, tmp_path: Path, item: Outgoing, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await outbox.put(item)
    assert outbox.pending() == []
    assert stored_blobs(tmp_path / "outbox.sqlite3") == []


async def test_wipe_refuses_an_empty_consultation_id(outbox: Outbox) -> None:
    item = chat(consultation_id="")
    await outbox.put(item)
    with pytest.raises(ValueError, match="consultation_id: must not be empty"):
        await outbox.wipe("")
    assert outbox.pending() == [item]


async def test_use_before_open_says_so(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite3", sealer())
    with pytest.raises(RuntimeError, match=r"not open: call open\(\) first"):
        await box.put(chat())
    await box.aclose()


@pytest.mark.parametrize(
    ("low", "high", "message"),
    [
        (0.0, 1.0, "backoff_min_seconds: must be greater than 0"),
        (2.0, 1.0, "backoff_max_seconds: must be at least"),
    ],
)
def test_bad_back_off_is_refused(tmp_path: Path, low: float, high: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Outbox(tmp_path / "o.sqlite3", sealer(), backoff_min_seconds=low, backoff_max_seconds=high)
