"""The outbox on disk: sealed, in order, restart-safe, wiped for real. Real SQLite, no bus."""

from __future__ import annotations

import json
import logging
import sqlite3
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telehealth_client.durable.at_rest import Sealer
from telehealth_client.durable.outbox import Outbox, OutboxFileError, Outgoing

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


def unreadable_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "outbox item unreadable" in r.getMessage()]


async def test_a_restart_with_a_wrong_key_keeps_the_items_for_the_next_start_with_the_right_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite3"
    writer = Outbox(path, sealer("key-one"))
    await writer.open()
    items = [chat("first"), chat("second")]
    for item in items:
        await writer.put(item)
    await writer.aclose()

    caplog.set_level(logging.INFO, logger="telehealth_client")
    mistyped = Outbox(path, sealer("key-two"))
    try:
        assert await mistyped.open() == []  # nothing it can read, so nothing to send
        assert mistyped.pending() == []
    finally:
        await mistyped.aclose()
    lines = unreadable_lines(caplog)
    assert len(lines) == 2 and items[0].id in lines[0] and items[1].id in lines[1]
    assert all("no key opens" in line for line in lines)
    assert all("key-one" not in line and "key-two" not in line and "first" not in line for line in lines)

    # Left where they were: the right key, current or rotated out, sends them after all.
    rightly = Outbox(path, sealer("key-one"))
    try:
        assert await rightly.open() == items
    finally:
        await rightly.aclose()
    rotated = Outbox(path, Sealer("key-three", ["key-two", "key-one"], purpose="outbox"))
    try:
        assert await rotated.open() == items
    finally:
        await rotated.aclose()


async def test_unreadable_rows_are_skipped_logged_at_every_open_and_never_block_the_queue(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite3"
    writer = Outbox(path, sealer())
    await writer.open()
    moved, garbled, kept = chat(), chat(), chat()
    for item in (moved, garbled, kept):
        await writer.put(item)
    await writer.aclose()
    with sqlite3.connect(path) as db:  # a blob moved to another consultation's row no longer opens
        db.execute("UPDATE pending SET consultation_id = 'consultation.dr-x.pat-9' WHERE id = ?", (moved.id,))
        db.execute("UPDATE pending SET sealed = x'0102' WHERE id = ?", (garbled.id,))

    caplog.set_level(logging.INFO, logger="telehealth_client")
    for _ in range(2):
        caplog.clear()
        reader = Outbox(path, sealer())
        try:
            assert await reader.open() == [kept]
        finally:
            await reader.aclose()
        lines = unreadable_lines(caplog)
        assert len(lines) == 2  # once per open, each with its id and reason
        assert moved.id in lines[0] and "no key opens" in lines[0]
        assert garbled.id in lines[1] and "too short (2 bytes)" in lines[1]
    with sqlite3.connect(path) as db:
        assert {row[0] for row in db.execute("SELECT id FROM pending")} == {moved.id, garbled.id, kept.id}


async def test_a_record_that_opens_but_is_not_an_outbox_item_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.sqlite3"
    writer = Outbox(path, sealer())
    await writer.open()
    bad, good = chat(), chat()
    await writer.put(bad)
    await writer.put(good)
    await writer.aclose()
    associated = json.dumps(["outbox", bad.id, bad.consultation_id, bad.kind]).encode()
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE pending SET sealed = ? WHERE id = ?",
            (sealer().seal(b'{"channel": 7}', associated=associated), bad.id),
        )
    caplog.set_level(logging.INFO, logger="telehealth_client")
    reader = Outbox(path, sealer())
    try:
        assert await reader.open() == [good]
    finally:
        await reader.aclose()
    assert unreadable_lines(caplog) == [
        f"outbox item unreadable, kept for a later start id={bad.id} reason=not a valid outbox record"
    ]


async def test_putting_an_unreadable_items_id_again_stores_the_new_copy_in_its_place(tmp_path: Path) -> None:
    """An emergency desk queues its undelivered escalation again with the same id at every start."""
    path = tmp_path / "outbox.sqlite3"
    writer = Outbox(path, sealer("key-one"))
    await writer.open()
    first, second = chat("first"), chat("second")
    await writer.put(first)
    await writer.put(second)
    await writer.aclose()

    reader = Outbox(path, sealer("key-two"))
    try:
        assert await reader.open() == []
        await reader.put(second)
        assert reader.pending() == [second]
    finally:
        await reader.aclose()
    again = Outbox(path, sealer("key-two"))
    try:
        assert await again.open() == [second]
    finally:
        await again.aclose()


async def test_wipe_deletes_the_consultations_unreadable_rows_too(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    writer = Outbox(path, sealer("key-one"))
    await writer.open()
    wiped, kept = chat(), chat(consultation_id="consultation.dr-lee.pat-2")
    await writer.put(wiped)
    await writer.put(kept)
    await writer.aclose()
    blob = stored_blobs(path)[0]

    reader = Outbox(path, sealer("key-two"))
    try:
        assert await reader.open() == []
        assert await reader.wipe(CONSULTATION) == []  # nothing it could read: nothing to report
    finally:
        await reader.aclose()
    assert blob not in raw_bytes(path) and wiped.id.encode() not in raw_bytes(path)
    rightly = Outbox(path, sealer("key-one"))
    try:
        assert await rightly.open() == [kept]
    finally:
        await rightly.aclose()


async def test_rows_an_earlier_version_set_aside_are_queued_again_in_their_place(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    writer = Outbox(path, sealer())
    await writer.open()
    items = [chat("first"), chat("second"), chat("third")]
    for item in items:
        await writer.put(item)
    await writer.aclose()
    with sqlite3.connect(path) as db:  # what the earlier version did to a row it could not open
        db.execute(
            "INSERT INTO set_aside (seq, id, consultation_id, kind, reason, sealed)"
            " SELECT seq, id, consultation_id, kind, 'no key opens', sealed FROM pending WHERE id = ?",
            (items[1].id,),
        )
        db.execute("DELETE FROM pending WHERE id = ?", (items[1].id,))

    reader = Outbox(path, sealer())
    try:
        assert await reader.open() == items
    finally:
        await reader.aclose()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM set_aside").fetchone() == (0,)


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


def damage(path: Path, how: str) -> None:
    """``path`` made into a file the outbox cannot use, as ``how`` says (blocking: test set-up)."""
    if how == "garbage":
        path.write_bytes(b"this is not an SQLite database, it was damaged " * 100)
    elif how == "directory":
        path.mkdir()
    elif how == "another-database":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE pending (seq INTEGER PRIMARY KEY, note TEXT)")
    else:  # a real outbox cut short, as a full disk or a lost write leaves it
        size = path.stat().st_size
        with path.open("r+b") as file:
            file.truncate(50 if how == "truncated-header" else size // 2)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("garbage", "not an SQLite database (damaged, or another kind of file)"),
        ("truncated-header", "the SQLite database is damaged"),
        ("truncated", "the SQLite database is damaged"),
        ("another-database", "an SQLite database without the outbox's tables"),
        ("directory", "cannot be opened (IsADirectoryError)"),
    ],
)
async def test_a_file_that_is_not_a_usable_outbox_is_named_with_the_reason_and_left_as_it_is(
    tmp_path: Path, how: str, reason: str
) -> None:
    path = tmp_path / "outbox.sqlite3"
    if how.startswith("truncated"):
        writer = Outbox(path, sealer())
        await writer.open()
        for n in range(100):
            await writer.put(chat(f"message {n} " + "x" * 300))
        await writer.aclose()
    damage(path, how)
    before = raw_bytes(path) if path.is_file() else b""
    box = Outbox(path, sealer())
    with pytest.raises(OutboxFileError) as caught:
        await box.open()
    assert caught.value.path == path
    assert caught.value.reason == reason
    assert str(caught.value) == f"{path}: {reason}"
    assert "damaged " not in str(caught.value)  # none of the file's content
    assert (raw_bytes(path) if path.is_file() else b"") == before
    with pytest.raises(RuntimeError, match="not open"):  # nothing half-open is left behind
        await box.put(chat())
    await box.aclose()
