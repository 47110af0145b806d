"""Which TURN server a call uses, read from the clinic backend's URLs as aiortc reads them (it uses
only the first it supports): the probe must try the same one, over the same transport."""

from __future__ import annotations

import pytest

from telehealth_client.media.common import CallError, TurnAddress, TurnConfig


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("turn:turn.example.org", TurnAddress("turn.example.org", 3478, "udp", False)),
        ("turn:10.0.0.5:3479", TurnAddress("10.0.0.5", 3479, "udp", False)),
        ("turn:10.0.0.5:3478?transport=tcp", TurnAddress("10.0.0.5", 3478, "tcp", False)),
        ("turns:turn.example.org", TurnAddress("turn.example.org", 5349, "tcp", True)),
        ("turns:turn.example.org:443?transport=tcp", TurnAddress("turn.example.org", 443, "tcp", True)),
        ("turn:[::1]:3478", TurnAddress("::1", 3478, "udp", False)),
        ("turn:[::1]", TurnAddress("::1", 3478, "udp", False)),
        # The ends of the port range, and a host name only brackets are taken off.
        ("turn:X.example.org:1", TurnAddress("X.example.org", 1, "udp", False)),
        ("turn:turn.example.org:65535", TurnAddress("turn.example.org", 65535, "udp", False)),
    ],
)
def test_turn_and_turns_urls_are_read_like_aiortc(url: str, expected: TurnAddress) -> None:
    assert TurnAddress.parse(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "stun:stun.example.org:3478",
        "turns:turn.example.org:443?transport=udp",  # DTLS: aiortc cannot use it
        "turn:turn.example.org?transport=sctp",
        "turn:",
        "turn:host:notaport",
        "turn:host:70000",
        "turn:host:65536",
        "turn:host:0",
        "turn::3478",  # no host
        "turn:[]:3478",
        "http://turn.example.org",
    ],
)
def test_urls_aiortc_would_skip_are_skipped(url: str) -> None:
    assert TurnAddress.parse(url) is None


def test_the_first_usable_url_is_the_one_probed() -> None:
    config = TurnConfig(
        ("stun:stun.example.org", "turns:turn.example.org:443?transport=udp", "turns:turn.example.org:443"),
        "user",
        "secret",
    )
    assert config.first_turn == TurnAddress("turn.example.org", 443, "tcp", True)


def test_no_usable_url_is_a_call_error_naming_it() -> None:
    with pytest.raises(CallError) as caught:
        _ = TurnConfig(("stun:stun.example.org",), "user", "secret").first_turn
    assert caught.value.reason == "no turn: or turns: URL among the TURN server's URLs"
