"""The relay's wildcard index agrees with the wildcard rule itself: a poll reads, through the index,
exactly the channels the rule says a wildcard brings (and so never scans every channel)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from telehealth_devstack.relay.store import MessageStore, StoredMessage
from telehealth_devstack.relay.wildcard import is_wildcard, matches, wildcards_bringing

SEGMENT = st.sampled_from(["a", "b", "dr-lee", "pat-1", "video", "*", ""])
NAME = st.builds(
    lambda parts, presence: ".".join(parts) + ("-pnpres" if presence else ""),
    st.lists(SEGMENT, min_size=1, max_size=5),
    st.booleans(),
)


@settings(max_examples=500)
@given(channel=NAME, wildcard=NAME)
def test_a_wildcard_is_indexed_for_a_channel_exactly_when_it_brings_it(channel: str, wildcard: str) -> None:
    if not is_wildcard(wildcard) or "*" in channel:
        return
    assert (wildcard in wildcards_bringing(channel)) == matches(wildcard, channel)


@settings(max_examples=200)
@given(channels=st.lists(NAME, max_size=12), wildcard=NAME)
def test_what_a_poll_reads_is_what_the_rule_brings_also_after_eviction(
    channels: list[str], wildcard: str
) -> None:
    store = MessageStore(max_messages_per_channel=5, max_channels=6)  # the oldest channels go
    concrete = [c for c in channels if "*" not in c]
    for number, channel in enumerate(concrete, start=1):
        store.add(StoredMessage(channel, number, {"n": number}, "user"))
    kept = store.channels()
    found = {m.channel for m in store.since([wildcard], 0, 100)}
    expected = {c for c in kept if is_wildcard(wildcard) and matches(wildcard, c)}
    if not is_wildcard(wildcard):
        expected = {wildcard} & set(kept)  # a name with no wildcard meaning is a channel
    assert found == expected


def test_a_channel_with_an_empty_segment_is_brought_by_no_wildcard() -> None:
    # Found by the property above: the rule said "a.*" brings "a.a." while the index held nothing.
    for channel in ("a.a.", "a..b", "a."):
        assert not matches("a.*", channel)
        assert wildcards_bringing(channel) == []
    assert matches("a.*", "a.b") and wildcards_bringing("a.b") == ["a.*"]
