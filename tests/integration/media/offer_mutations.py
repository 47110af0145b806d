"""Broken offers made from a real one, the same for the same seed: truncations and line mutations.

Used by the mid-call test (a sample) and by ``scripts/fuzz_offers.py`` (the whole set, against a
media child). Each offer comes with a label that says how it was made (never the SDP itself, which
no log may hold).
"""

from __future__ import annotations

import random
from collections.abc import Callable

Mutation = Callable[[list[str], random.Random], list[str]]

VALUES = ("", "x", "0", "-1", "65536", "99999999999999999999", "abc def", "é", "a" * 300, ":", "/", " ")
LINES = (
    "a=foo:bar",
    "m=video 0 RTP/AVP 0",
    "m=audio 9 UDP/TLS/RTP/SAVPF",
    "c=IN IP6 ::1",
    "a=rtpmap:96",
    "a=rtpmap:300 VP8/90000",
    "a=fmtp:96 ;;;",
    "a=candidate:1 1 udp",
    "a=candidate:1 1 udp 1 300.1.1.1 99999 typ relay",
    "a=ssrc:abc",
    "a=ssrc-group:FID 1",
    "a=rtcp-fb:* nack",
    "a=msid:",
    "a=extmap:99999 urn:x",
    "a=mid:",
    "a=group:BUNDLE 7 8",
    "a=setup:active",
    "a=fingerprint:sha-256 00",
    "a=rtcp:0",
    "a=sctp-port:x",
)


def truncations(sdp: str) -> list[tuple[str, str]]:
    """The offer cut at every 10 % of its length (10 % to 90 %)."""
    return [(f"truncated at {percent} %", sdp[: len(sdp) * percent // 100]) for percent in range(10, 100, 10)]


def mutations(sdp: str, count: int, seed: int) -> list[tuple[str, str]]:
    """``count`` offers, each the real one with one to three of its lines mutated."""
    rng = random.Random(seed)
    made = []
    for index in range(count):
        lines = sdp.split("\r\n")
        names = []
        for _ in range(rng.randint(1, 3)):
            name, mutate = rng.choice(MUTATIONS)
            lines = mutate(lines, rng)
            names.append(name)
        made.append((f"mutation {index}: {', '.join(names)}", "\r\n".join(lines)))
    return made


def _pick(lines: list[str], rng: random.Random) -> int:
    """A line with content (the last one is the empty end)."""
    return rng.randrange(max(1, len(lines) - 1))


def _drop(lines: list[str], rng: random.Random) -> list[str]:
    index = _pick(lines, rng)
    return lines[:index] + lines[index + 1 :]


def _duplicate(lines: list[str], rng: random.Random) -> list[str]:
    index = _pick(lines, rng)
    return lines[: index + 1] + lines[index:]


def _swap(lines: list[str], rng: random.Random) -> list[str]:
    first, second = _pick(lines, rng), _pick(lines, rng)
    swapped = list(lines)
    swapped[first], swapped[second] = swapped[second], swapped[first]
    return swapped


def _cut(lines: list[str], rng: random.Random) -> list[str]:
    index = _pick(lines, rng)
    line = lines[index]
    return [*lines[:index], line[: rng.randrange(len(line) + 1)], *lines[index + 1 :]]


def _value(lines: list[str], rng: random.Random) -> list[str]:
    """The part after the attribute name (``a=name:``) or the type (``x=``) replaced."""
    index = _pick(lines, rng)
    line = lines[index]
    head = line.split(":", 1)[0] + ":" if line.startswith("a=") and ":" in line else line[:2]
    return [*lines[:index], head + rng.choice(VALUES), *lines[index + 1 :]]


def _token(lines: list[str], rng: random.Random) -> list[str]:
    """One space-separated field of a line replaced (a port, a payload type, a priority...)."""
    index = _pick(lines, rng)
    fields = lines[index].split(" ")
    fields[rng.randrange(len(fields))] = rng.choice(VALUES)
    return [*lines[:index], " ".join(fields), *lines[index + 1 :]]


def _insert(lines: list[str], rng: random.Random) -> list[str]:
    index = _pick(lines, rng)
    return [*lines[:index], rng.choice(LINES), *lines[index:]]


def _character(lines: list[str], rng: random.Random) -> list[str]:
    index = _pick(lines, rng)
    line = lines[index]
    at = rng.randrange(len(line) + 1)
    return [*lines[:index], line[:at] + rng.choice("=:/ -0x\t") + line[at + 1 :], *lines[index + 1 :]]


def _media_line(lines: list[str], rng: random.Random) -> list[str]:
    """A field of an ``m=`` line changed: the section's kind, port, protocol or formats."""
    sections = [index for index, line in enumerate(lines) if line.startswith("m=")]
    if not sections:
        return lines
    index = rng.choice(sections)
    fields = lines[index][2:].split(" ")
    position = rng.randrange(len(fields))
    fields[position] = rng.choice(("application", "text", "0", "9", "RTP/AVP", "UDP/DTLS/SCTP", "96", "256"))
    return [*lines[:index], "m=" + " ".join(fields), *lines[index + 1 :]]


MUTATIONS: tuple[tuple[str, Mutation], ...] = (
    ("drop a line", _drop),
    ("duplicate a line", _duplicate),
    ("swap two lines", _swap),
    ("cut a line", _cut),
    ("replace a value", _value),
    ("replace a field", _token),
    ("insert a line", _insert),
    ("change a character", _character),
    ("change a media line", _media_line),
)
