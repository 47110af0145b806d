"""The chat log, pure: timetoken order, once per id, delivery status, read receipts, text limits."""

import uuid
from datetime import UTC, datetime

import pytest

from telehealth_client.consultation.chat import ChatError, ChatLog, check_text
from telehealth_client.protocol.messages import ChatMessage, Drop, SenderRole
from telehealth_client.pubsub.pubnub_bus import publish_size

CID = "consultation.dr-lee.pat-1"
PATIENT = "pat-1"


def ENCRYPTED(channel: str, message: object) -> int:
    return publish_size(channel, message, encrypted=True)


PROVIDER = "dr-lee"
SPECIALIST = "dr-okafor"


def chat(sender: str = PROVIDER, role: SenderRole = "provider", text: str = "hello") -> ChatMessage:
    return ChatMessage(
        id=str(uuid.uuid4()), sender_id=sender, sender_role=role, text=text, sent_at=datetime.now(UTC)
    )


def ids(log: ChatLog) -> list[str]:
    return [entry.id for entry in log.entries]


def test_messages_are_ordered_by_timetoken_whatever_order_they_arrive_in() -> None:
    log = ChatLog(PATIENT)
    first, second, third = chat(), chat(PATIENT, "patient"), chat()
    log.receive(third, 300)
    log.receive(first, 100)
    log.receive(second, 200)
    assert ids(log) == [first.id, second.id, third.id]
    assert [e.own for e in log.entries] == [False, True, False]


def test_the_same_id_is_shown_once() -> None:
    log = ChatLog(PATIENT)
    message = chat()
    assert log.receive(message, 100)[1] is True
    entry, changed = log.receive(message, 150)  # a retried publish landed twice
    assert changed is False and entry.timetoken == 100
    assert ids(log) == [message.id]


def test_a_pending_message_follows_the_published_ones_until_its_echo_gives_it_a_timetoken() -> None:
    log = ChatLog(PATIENT)
    mine = chat(PATIENT, "patient")
    theirs = chat()
    pending = log.add_pending(mine)
    assert pending.status == "pending" and pending.timetoken is None
    log.receive(theirs, 500)
    assert ids(log) == [theirs.id, mine.id]
    echo, changed = log.receive(mine, 400)
    assert changed and echo.status == "sent" and echo.timetoken == 400
    assert ids(log) == [mine.id, theirs.id]


def test_pending_messages_keep_the_order_they_were_written_in() -> None:
    log = ChatLog(PATIENT)
    written = [chat(PATIENT, "patient", f"m{i}") for i in range(5)]
    for message in written:
        log.add_pending(message)
    assert ids(log) == [m.id for m in written]
    assert log.mark_sent(written[2].id, 10) is not None
    assert ids(log)[0] == written[2].id


def test_sent_and_failed_change_only_what_they_may() -> None:
    log = ChatLog(PATIENT)
    mine = chat(PATIENT, "patient")
    log.add_pending(mine)
    failed = log.mark_failed(mine.id, "access-denied")
    assert failed is not None and failed.status == "failed" and failed.failure == "access-denied"
    assert log.mark_failed(mine.id, "again") is None  # only a pending message can fail
    sent = log.mark_sent(mine.id, 900)  # its publish landed after all (seen in history)
    assert sent is not None and sent.status == "sent" and sent.failure is None
    assert log.mark_sent(mine.id, 901) is None
    assert log.mark_sent(str(uuid.uuid4()), 1) is None


def test_someone_elses_message_with_our_id_does_not_mark_ours_sent() -> None:
    log = ChatLog(PATIENT)
    mine = chat(PATIENT, "patient")
    log.add_pending(mine)
    forged = mine.model_copy(update={"sender_id": PROVIDER, "sender_role": "provider"})
    entry, changed = log.receive(forged, 100)
    assert changed is False and entry.status == "pending" and entry.sender_id == PATIENT


def test_a_receipt_marks_every_message_up_to_it_read_by_the_reader_only() -> None:
    log = ChatLog(PATIENT)
    a, b, c = chat(PATIENT, "patient"), chat(), chat(PATIENT, "patient")
    for message, tt in ((a, 100), (b, 200), (c, 300)):
        log.receive(message, tt)
    assert log.apply_read(PROVIDER, b.id) is True
    assert log.read_by(a.id) == {PROVIDER}
    assert log.read_by(b.id) == frozenset()  # its own sender does not count
    assert log.read_by(c.id) == frozenset()
    assert log.apply_read(PROVIDER, a.id) is False  # older than the reader's mark: no change
    assert log.read_by(a.id) == {PROVIDER}
    assert log.apply_read(SPECIALIST, c.id) is True
    assert log.read_by(a.id) == {PROVIDER, SPECIALIST} and log.read_by(c.id) == {SPECIALIST}


def test_a_receipt_for_an_unknown_or_unpublished_message_is_a_drop_that_changes_nothing() -> None:
    log = ChatLog(PATIENT)
    known = chat()
    log.receive(known, 100)
    pending = chat(PATIENT, "patient")
    log.add_pending(pending)
    for target in (str(uuid.uuid4()), pending.id):
        outcome = log.apply_read(PROVIDER, target)
        assert isinstance(outcome, Drop) and outcome.field == "upToId"
    assert log.read_by(known.id) == frozenset()


def test_newest_id_skips_unsent_messages_and_clear_forgets_everything() -> None:
    log = ChatLog(PATIENT)
    assert log.newest_id() is None
    published = chat()
    log.receive(published, 100)
    log.add_pending(chat(PATIENT, "patient"))
    assert log.newest_id() == published.id
    log.apply_read(PATIENT, published.id)
    log.clear()
    assert log.entries == [] and log.newest_id() is None and log.get(published.id) is None
    assert log.read_by(published.id) == frozenset()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "must be 1-4000 characters, got 0"),
        ("x" * 4001, "must be 1-4000 characters, got 4001"),
        ("   \n\t", "must not be blank"),
        (42, "must be a string"),
    ],
)
def test_text_out_of_bounds_is_refused_naming_the_field(text: object, reason: str) -> None:
    with pytest.raises(ChatError) as refused:
        check_text(text, CID, PATIENT, ENCRYPTED)
    assert refused.value.field == "text" and refused.value.reason == reason


def test_text_at_the_limits_is_accepted() -> None:
    assert check_text("x", CID, PATIENT, ENCRYPTED) == "x"
    assert check_text("é" * 4000, CID, PATIENT, ENCRYPTED) == "é" * 4000


def test_text_too_big_once_encrypted_is_refused_with_its_size() -> None:
    # 4000 characters, but each an emoji: JSON escapes it to 12 bytes, far over 32 KiB encrypted.
    with pytest.raises(ChatError) as refused:
        check_text("\U0001f600" * 4000, CID, PATIENT, ENCRYPTED)
    assert refused.value.field == "text" and "bytes once encrypted" in refused.value.reason
