"""JSON with bounds: nesting depth, finite numbers. Pure, no I/O.

Python's json module recurses once per nesting level, so a 6,000-deep payload raises
RecursionError, and it reads ``1e999`` as infinity, which ``int()`` cannot take. What
comes off the network is checked here before anything recurses into it.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# The agent's own messages nest a handful of levels; this leaves room and stays far below
# the interpreter's recursion limit however the value is walked later (pydantic, json.dumps).
MAX_JSON_DEPTH = 64

# A JSON string literal, escapes included: its brackets are text, not structure. An unterminated
# one runs to the end (JSON fails there anyway): were it left unmatched, the scan would restart at
# every later quote, quadratic in a hostile message (seconds for 32 KB, on the event loop).
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


class JsonLimitError(ValueError):
    """A JSON text or value beyond what this agent decodes; the message names which bound."""


def text_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in a JSON text (0 for a scalar)."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    depth = deepest = 0
    for bracket in brackets:
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise JsonLimitError(f"JSON constant {name} is not a number this agent accepts")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonLimitError("JSON number is out of range")
    return value


def loads(text: str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` refusing deeper than ``max_depth``, NaN, infinities and out-of-range numbers.

    Raises JsonLimitError for a bound, ValueError (json.JSONDecodeError) for bad JSON.
    """
    if text_depth(text) > max_depth:
        raise JsonLimitError(f"JSON nests deeper than {max_depth} levels")
    return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)


def check_value(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse an already-parsed value nested deeper than ``max_depth`` or holding a non-finite float.

    Iterative, so that checking cannot itself overflow the stack.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            if isinstance(item, float) and not math.isfinite(item):
                raise JsonLimitError("JSON number is not finite")
            continue
        if depth + 1 > max_depth:
            raise JsonLimitError(f"JSON nests deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)
