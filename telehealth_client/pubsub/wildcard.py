"""PubNub's wildcard subscribe names, as the client needs them (pure).

PubNub's rules (support article "How many channel segments are supported with wildcard
subscribe", and the Subscriptions guide): a wildcard ends in ``.*`` and has at most two dots,
``a.*`` or ``a.b.*``; it brings every channel of at most three dot-separated segments below its
prefix, so ``consultation.dr-lee.*`` brings ``consultation.dr-lee.pat-1`` but never the
four-segment ``consultation.dr-lee.pat-1.video``. ``a.b.*-pnpres`` brings their presence
events. Any other name with a ``*`` is a literal channel name to PubNub.
"""

from __future__ import annotations

from telehealth_client.protocol.channels import PRESENCE_SUFFIX

_SUFFIX = ".*"
MAX_SEGMENTS = 3


def is_wildcard(name: str) -> bool:
    """True for ``a.*`` and ``a.b.*`` (and their ``-pnpres``): what PubNub treats as a wildcard."""
    base = name.removesuffix(PRESENCE_SUFFIX)
    if not base.endswith(_SUFFIX):
        return False
    prefix = base[: -len(_SUFFIX)]
    segments = prefix.split(".")
    return "*" not in prefix and len(segments) <= MAX_SEGMENTS - 1 and all(segments)


def matches(wildcard: str, channel: str) -> bool:
    """True when subscribing to ``wildcard`` brings what is published on ``channel``.

    A presence wildcard (``a.b.*-pnpres``) brings only presence channels, a plain one only plain
    channels; a name that is no wildcard brings nothing but itself (never asked here).
    """
    if not is_wildcard(wildcard):
        return False
    presence = wildcard.endswith(PRESENCE_SUFFIX)
    if presence != channel.endswith(PRESENCE_SUFFIX):
        return False
    prefix = wildcard.removesuffix(PRESENCE_SUFFIX)[: -len("*")]
    base = channel.removesuffix(PRESENCE_SUFFIX)
    rest = base[len(prefix) :]
    return base.startswith(prefix) and bool(rest) and "*" not in rest and len(base.split(".")) <= MAX_SEGMENTS
