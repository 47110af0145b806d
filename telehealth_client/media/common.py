"""What the agent and the media child share about a call, without loading aiortc.

The agent never imports aiortc (its native memory and import time belong in the media child):
``CallError``, ``TurnConfig`` and ``check_sdp`` live here so that signaling and the agent's
handle on the child can use them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from telehealth_client.outbound import Outbound


class CallError(Exception):
    """The call cannot go on; ``code`` is machine-readable, ``reason`` is for the person on call."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class TurnConfig:
    """The TURN server's URLs and credentials, and ``outbound``: how TCP and TLS connections to it
    leave this machine (the HTTPS proxy, the CA bundle; the default: directly, the system's CAs)."""

    urls: tuple[str, ...]
    username: str
    credential: str
    outbound: Outbound = field(default_factory=Outbound)

    def __repr__(self) -> str:  # the credential is a secret
        return f"TurnConfig(urls={self.urls!r})"

    @property
    def ordered_urls(self) -> tuple[str, ...]:
        """``urls`` in the order aiortc is to try them: behind a proxy, the TCP and TLS ones that go
        through it first, as aiortc uses only the first TURN URL and UDP cannot cross an HTTP proxy."""
        if self.outbound.proxy is None:
            return self.urls

        def tunnelled(url: str) -> bool:
            address = TurnAddress.parse(url)
            return (
                address is not None
                and address.transport == "tcp"
                and self.outbound.proxy_for(address.host) is not None
            )

        return tuple(sorted(self.urls, key=lambda url: not tunnelled(url)))  # stable: the clinic's order

    @property
    def first_turn(self) -> TurnAddress:
        """The TURN server aiortc will use: the first ``turn:`` (UDP or TCP) or ``turns:`` (TLS
        over TCP) URL it supports (it uses only one), of ``ordered_urls``."""
        for url in self.ordered_urls:
            address = TurnAddress.parse(url)
            if address is not None:
                return address
        raise CallError("turn-unreachable", "no turn: or turns: URL among the TURN server's URLs")


@dataclass(frozen=True)
class TurnAddress:
    host: str
    port: int
    transport: str  # "udp" or "tcp"
    tls: bool

    @classmethod
    def parse(cls, url: str) -> TurnAddress | None:
        """``turn:host[:port][?transport=udp|tcp]`` or ``turns:host[:port][?transport=tcp]`` (RFC
        7065); None for any other URL or a transport aiortc cannot use, as aiortc skips them."""
        scheme, _, rest = url.partition(":")
        if scheme not in ("turn", "turns") or not rest:
            return None
        rest, _, query = rest.partition("?")
        transport = query.removeprefix("transport=") if query else ("tcp" if scheme == "turns" else "udp")
        if transport not in (("tcp",) if scheme == "turns" else ("udp", "tcp")):
            return None
        host, colon, port = rest.rpartition(":")
        if not colon or "]" in port:  # no port given (an IPv6 address's colons are not one)
            host, port = rest, ""
        if not port:
            number = 5349 if scheme == "turns" else 3478
        elif port.isdigit() and 0 < int(port) < 65536:
            number = int(port)
        else:
            return None
        host = host.strip("[]")
        return cls(host, number, transport, scheme == "turns") if host else None


MEDIA_KINDS = ("audio", "video")
ICE_AND_DTLS = ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:")


M_LINE_PROTO = re.compile(r"[A-Z/]+")
DTLS_SETUP = ("active", "passive", "actpass")
# RTP payload types are 0-127 on the wire (RFC 3550); aiortc accepts 0-255 but refuses 72-76,
# which would make RTP look like RTCP (RFC 5761).
RTCP_CONFLICT = range(72, 77)


def _payload_type(text: str) -> bool:
    return text.isascii() and text.isdigit() and int(text) < 256 and int(text) not in RTCP_CONFLICT


def check_sdp(sdp: str, kind: str) -> None:
    """The shape every usable description has, checked before the call's media is touched:
    aiortc's parser takes almost anything and fails only while answering, when the working call
    has already been given up for the new one."""
    if not sdp.startswith("v=0") or "\nm=" not in sdp:
        raise CallError("sdp", f"the remote {kind} is not a session description with media")
    lines = [line.strip() for line in sdp.splitlines()]
    sections = [line[2:].split() for line in lines if line.startswith("m=")]
    # aiortc reads every m= line as "kind port PROTO format...", a rejected one too, and an audio
    # or video section's formats as RTP payload types.
    if any(len(fields) < 4 for fields in sections):
        raise CallError("sdp", f"the remote {kind} has a media section without a format")
    for fields in sections:
        port, proto = fields[1], fields[2]
        if not (port.isascii() and port.isdigit()) or not M_LINE_PROTO.fullmatch(proto):
            raise CallError(
                "sdp", f"the remote {kind} has a media section whose port or protocol is unreadable"
            )
        if fields[0] in MEDIA_KINDS and not all(_payload_type(fmt) for fmt in fields[3:]):
            raise CallError("sdp", f"the remote {kind} has a media format that is not an RTP payload type")
    for line in lines:
        if line.startswith("a=setup:") and line[len("a=setup:") :].strip() not in DTLS_SETUP:
            raise CallError(
                "sdp", f"the remote {kind} has a DTLS setup that is not active, passive or actpass"
            )
    usable = [
        fields for fields in sections if fields[0] in MEDIA_KINDS and fields[1] != "0" and "RTP" in fields[2]
    ]
    if not usable:
        raise CallError("sdp", f"the remote {kind} has no audio or video section that is not rejected")
    for attribute in ICE_AND_DTLS:
        if not any(line.startswith(attribute) for line in lines):
            raise CallError("sdp", f"the remote {kind} has no {attribute[2:-1]}")


DTLS_ACTIVE_OFFER = re.compile(r"^a=setup:active(?=\r?$)", re.MULTILINE)


def as_dtls_client_offer(sdp: str) -> str:
    """The offer with ``a=setup:active`` read as ``actpass``, so that the answer made to it says
    ``a=setup:active`` (we are the DTLS client): PROTOCOL.md, Recovery, measured with Chromium: a
    browser's live connection that restarts ICE takes a new DTLS fingerprint only as the server."""
    return DTLS_ACTIVE_OFFER.sub("a=setup:actpass", sdp)
