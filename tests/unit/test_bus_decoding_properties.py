"""Property: whatever a subscribe answer or a history page holds, decoding never raises.

Arbitrary JSON, arbitrary strings and arbitrary bytes (as text, as base64 that looks like
ciphertext, and behind a ``PNED`` header) are fed as whole entries, as payloads, as meta
and as timetokens, with and without a cipher key. Derandomized: the same examples every run.
"""

from __future__ import annotations

import json
from base64 import b64encode
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from telehealth_client.pubsub.bus import Envelope, PresenceEvent
from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_client.pubsub.wire import Dropped, decode_history_item, parse_subscribe_answer

CRYPTO = RotatingCryptoModule("property-test-key")
DECRYPTORS = st.sampled_from([CRYPTO, None])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and infinities included: the SDK's json.loads produces them
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


def deep(levels: int, leaf: Any) -> Any:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


byte_texts = st.binary(max_size=200).flatmap(
    lambda raw: st.sampled_from(
        [
            raw.decode("latin-1"),
            raw.decode("utf-8", "surrogateescape"),
            b64encode(raw).decode(),
            b64encode(b"PNED\x01" + raw).decode(),
            b64encode(b"PNED\x01ACRH" + raw).decode(),
            CRYPTO.encrypt(raw.decode("latin-1") or " "),  # real ciphertext of anything
        ]
    )
)
deep_values = st.integers(min_value=60, max_value=3000).map(lambda n: deep(n, 1))
deep_ciphertexts = st.integers(min_value=60, max_value=6000).map(lambda n: CRYPTO.encrypt("[" * n + "]" * n))
anything = json_values | st.text() | byte_texts | deep_values | deep_ciphertexts
good_timetokens = st.integers(min_value=0, max_value=2**64).map(str)
timetokens = good_timetokens | anything
channels = st.sampled_from(["consultation.a.b", "consultation.a.b-pnpres", "", "x-pnpres"]) | st.text()
presence_payloads = st.fixed_dictionaries({"action": st.text(), "occupancy": anything, "uuid": anything})


@st.composite
def entries(draw: st.DrawFn) -> Any:
    if draw(st.integers(min_value=0, max_value=5)) == 0:
        return draw(anything)  # not even an object
    # Mostly well-formed around the payload, so that the payload itself gets decoded.
    entry: dict[str, Any] = {
        "c": draw(channels),
        "p": draw(st.fixed_dictionaries({"t": good_timetokens}) | st.fixed_dictionaries({"t": anything})),
        "d": draw(anything | presence_payloads),
    }
    for key in ("i", "u", "e"):
        if draw(st.booleans()):
            entry[key] = draw(anything | st.integers(min_value=0, max_value=5))
    return entry


SETTINGS = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(items=st.lists(entries(), max_size=5), decryptor=DECRYPTORS)
def test_subscribe_answer_entries_never_raise(
    items: list[Any], decryptor: RotatingCryptoModule | None
) -> None:
    parsed = parse_subscribe_answer({"t": {"t": "17000000000000000", "r": 1}, "m": items}, decryptor)
    assert len(parsed.entries) == len(items)
    for entry in parsed.entries:
        assert isinstance(entry, Envelope | PresenceEvent | Dropped)
        if isinstance(entry, Envelope):
            json.dumps(entry.message, allow_nan=False)  # what is delivered is plain, bounded JSON


@SETTINGS
@given(
    payload=anything,
    timetoken=timetokens,
    publisher=anything,
    meta=anything,
    decryptor=DECRYPTORS,
)
def test_history_items_never_raise(
    payload: Any, timetoken: Any, publisher: Any, meta: Any, decryptor: RotatingCryptoModule | None
) -> None:
    decoded = decode_history_item("consultation.a.b", payload, timetoken, publisher, meta, decryptor)
    assert isinstance(decoded, Envelope | Dropped)
    if isinstance(decoded, Envelope):
        json.dumps(decoded.message, allow_nan=False)
