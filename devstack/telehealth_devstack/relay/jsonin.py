"""JSON from clients, bounded: nesting deeper than ``MAX_DEPTH`` is refused before it is stored.

A value nested close to Python's recursion limit parses but cannot be written back out (every
subscribe and history answer of its channel would then fail), and deeper still it fails to parse
with ``RecursionError``. So every JSON the relay reads from a request goes through ``loads``.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64


class JsonInputError(ValueError):
    """Why a client's JSON is refused, in words fit for the answer (never the input itself)."""


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: stored, they would break every JSON parser downstream.
    raise JsonInputError("NaN and Infinity are not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonInputError("a number out of range")
    return value


def _parse(text: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except JsonInputError:
        raise
    except RecursionError:
        raise JsonInputError(f"nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        raise JsonInputError("not JSON") from None


def loads(text: str) -> Any:
    """``json.loads`` that refuses invalid JSON and nesting deeper than ``MAX_DEPTH``."""
    value = _parse(text)
    # Counting brackets is cheap and almost always proves the bound without a walk; brackets
    # inside strings only make the count larger, never smaller, so it is safe.
    if text.count("[") + text.count("{") > MAX_DEPTH and _deeper_than(value, MAX_DEPTH):
        raise JsonInputError(f"nested deeper than {MAX_DEPTH} levels")
    return value


def _deeper_than(value: Any, limit: int) -> bool:
    # Iterative, so that the check itself cannot hit the recursion limit.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False
