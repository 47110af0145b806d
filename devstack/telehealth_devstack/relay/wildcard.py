"""Wildcard subscribe as PubNub's origin serves it.

PubNub's rules (support article "How many channel segments are supported with wildcard
subscribe"; the Subscriptions guide): a wildcard is ``a.*`` or ``a.b.*`` (at most two dots, ``*``
only last, after a dot) and brings every channel of at most three dot-separated segments below
its prefix: ``consultation.dr.*`` brings ``consultation.dr.pat`` and never the four-segment
``consultation.dr.pat.video``. Its ``-pnpres`` twin brings their presence events. Any other name
holding ``*`` (``a*``, ``a.*.b``, ``a.b.c.*``) is a literal channel name. Each subscribe answer
entry names the concrete channel in ``c`` and the subscription that brought it in ``b``.
"""

from __future__ import annotations

from collections.abc import Iterable

from .presence import PRESENCE_SUFFIX

MAX_SEGMENTS = 3


def is_wildcard(name: str) -> bool:
    base = name.removesuffix(PRESENCE_SUFFIX)
    if not base.endswith(".*"):
        return False
    segments = base[:-2].split(".")
    return len(segments) < MAX_SEGMENTS and all(segments) and "*" not in base[:-2]


def matches(wildcard: str, channel: str) -> bool:
    """True when a subscription to ``wildcard`` brings what is published on ``channel``."""
    if not is_wildcard(wildcard) or wildcard.endswith(PRESENCE_SUFFIX) != channel.endswith(PRESENCE_SUFFIX):
        return False
    prefix = wildcard.removesuffix(PRESENCE_SUFFIX)[:-1]  # "a.b."
    base = channel.removesuffix(PRESENCE_SUFFIX)
    rest = base[len(prefix) :]
    # Every segment named (no "a.b." or "a..b"): the index, ``wildcards_bringing``, holds no other.
    return (
        base.startswith(prefix)
        and all(base.split("."))
        and "*" not in rest
        and base.count(".") < MAX_SEGMENTS
    )


def wildcards_bringing(channel: str) -> list[str]:
    """Every wildcard a subscription to which brings ``channel`` (for an index: a poll then finds
    what a wildcard brings without scanning every channel)."""
    suffix = PRESENCE_SUFFIX if channel.endswith(PRESENCE_SUFFIX) else ""
    base = channel.removesuffix(PRESENCE_SUFFIX)
    segments = base.split(".")
    if len(segments) > MAX_SEGMENTS or "*" in base or not all(segments):
        return []
    return [".".join(segments[:depth]) + ".*" + suffix for depth in range(1, len(segments))]


def subscription_for(channel: str, names: Iterable[str]) -> str | None:
    """Which of a request's ``names`` brings ``channel``: itself if listed, else a wildcard."""
    listed = list(names)
    if channel in listed:
        return channel
    return next((name for name in listed if matches(name, channel)), None)


def presence_members(channels: Iterable[str]) -> list[str]:
    """The channels a subscribe or heartbeat makes its user present on: neither presence channels
    nor wildcards (a wildcard subscriber is present on no one channel it brings)."""
    return [c for c in channels if not c.endswith(PRESENCE_SUFFIX) and not is_wildcard(c)]
