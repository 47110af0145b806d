"""The JSON bounds, exactly: how depth is counted (strings' brackets are text), where the limit
falls, what each refusal says (mutants that survived the decoding tests moved a bound, miscounted
depth or changed a refusal and nothing noticed)."""

from __future__ import annotations

import json
import time

import pytest

from telehealth_client.pubsub.bounded_json import (
    MAX_JSON_DEPTH,
    JsonLimitError,
    check_value,
    loads,
    text_depth,
)


def nested(levels: int, leaf: object = 1) -> object:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"a string"', 0),
        ("[]", 1),
        ("[1, [2, {}]]", 3),
        ("[][][]", 1),  # siblings do not add up
        ("[[]][[[]]]", 3),
        ('{"a": [1, {"b": {}}], "c": []}', 4),
        ('["[[[", "{{{"]', 1),  # brackets inside strings are text
        ('["a\\"[[[", "]"]', 1),  # an escaped quote does not end the string
        ('["\\\\", [[]]]', 3),  # an escaped backslash does end it
    ],
)
def test_text_depth_counts_only_structure(text: str, depth: int) -> None:
    assert text_depth(text) == depth


def test_the_default_depth_limit_is_64() -> None:
    assert MAX_JSON_DEPTH == 64
    assert loads("[" * 64 + "]" * 64) == nested(63, [])
    with pytest.raises(JsonLimitError) as caught:
        loads("[" * 65 + "]" * 65)
    assert str(caught.value) == "JSON nests deeper than 64 levels"


def test_a_caller_sets_its_own_depth_limit() -> None:
    assert loads('{"a": [1]}', max_depth=2) == {"a": [1]}
    with pytest.raises(JsonLimitError) as caught:
        loads('{"a": [1]}', max_depth=1)
    assert str(caught.value) == "JSON nests deeper than 1 levels"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("NaN", "JSON constant NaN is not a number this agent accepts"),
        ('{"n": Infinity}', "JSON constant Infinity is not a number this agent accepts"),
        ("[-Infinity]", "JSON constant -Infinity is not a number this agent accepts"),
        ("1e999", "JSON number is out of range"),
        ('{"n": -1.5e400}', "JSON number is out of range"),
    ],
)
def test_non_finite_numbers_are_refused_by_name(text: str, reason: str) -> None:
    with pytest.raises(JsonLimitError) as caught:
        loads(text)
    assert str(caught.value) == reason


def test_finite_numbers_and_plain_json_decode_as_json_does() -> None:
    text = '{"f": 1.5, "e": -2.5e10, "i": 12345678901234567890, "s": "NaN", "l": [true, null]}'
    assert loads(text) == json.loads(text)


def test_bad_json_is_a_decode_error_not_a_limit() -> None:
    with pytest.raises(json.JSONDecodeError):
        loads("[1,")
    with pytest.raises(ValueError) as caught:
        loads("{'a': 1}")
    assert not isinstance(caught.value, JsonLimitError)


def test_check_value_allows_exactly_the_limit() -> None:
    check_value(nested(64))
    check_value({"a": nested(62, {"b": 1.5})})  # 64 containers
    check_value(nested(3), max_depth=3)
    check_value("scalar", max_depth=0)


@pytest.mark.parametrize(
    ("value", "max_depth"),
    [
        (nested(65), MAX_JSON_DEPTH),
        ({"a": nested(64)}, MAX_JSON_DEPTH),
        (nested(64, ()), MAX_JSON_DEPTH),  # a tuple is a level too
        ([1, 2, {"k": [[]]}], 2),
        ([], 0),
    ],
)
def test_check_value_refuses_one_level_more(value: object, max_depth: int) -> None:
    with pytest.raises(JsonLimitError) as caught:
        check_value(value, max_depth=max_depth)
    assert str(caught.value) == f"JSON nests deeper than {max_depth} levels"


@pytest.mark.parametrize(
    "value",
    [float("nan"), [1, float("inf")], {"a": {"b": [-float("inf")]}}, ("x", float("nan"))],
)
def test_check_value_refuses_a_non_finite_number_anywhere(value: object) -> None:
    with pytest.raises(JsonLimitError) as caught:
        check_value(value)
    assert str(caught.value) == "JSON number is not finite"


def test_check_value_walks_every_child_of_every_container() -> None:
    # The bad item last in its list, after a sibling container: every child gets looked at.
    check_value({"a": [1, 2.5, {"b": None}], "c": "text"})
    with pytest.raises(JsonLimitError):
        check_value({"a": [[1], {"b": None}, 3, float("nan")], "c": "text"})
    with pytest.raises(JsonLimitError):
        check_value([{"x": 1}, {"y": [float("inf")]}, {"z": 2}])


@pytest.mark.parametrize("text", ['"' + '\\"' * 16_383, '"\\' * 16_384])
def test_a_hostile_message_is_measured_in_linear_time(text: str) -> None:
    # Quotes that open no complete string used to be rescanned from each later quote: a 32 KB
    # message took seconds of CPU on the event loop. CPU time of this thread, so a busy machine
    # does not count; the fix takes milliseconds, the quadratic scan over five seconds here.
    started = time.thread_time()
    assert text_depth(text) <= 1
    assert time.thread_time() - started < 1.0


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ('["abc[', 1),  # an unterminated string runs to the end: its brackets are text
        ('[{"a": "b\\[[', 2),
        ('"[[[', 0),
    ],
)
def test_brackets_after_an_unterminated_string_are_text(text: str, depth: int) -> None:
    assert text_depth(text) == depth
    with pytest.raises(json.JSONDecodeError):
        loads(text)
