"""What the agent and the media child share about a call, without loading aiortc.

The agent never imports aiortc (its native memory and import time belong in the media child):
``CallError``, ``TurnConfig`` and ``check_sdp`` live here so that signaling and the agent's
handle on the child can use them.
"""

from __future__ import annotations

from dataclasses import dataclass


class CallError(Exception):
    """The call cannot go on; ``code`` is machine-readable, ``reason`` is for the person on call."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class TurnConfig:
    urls: tuple[str, ...]
    username: str
    credential: str

    def __repr__(self) -> str:  # the credential is a secret
        return f"TurnConfig(urls={self.urls!r})"

    @property
    def first_turn(self) -> tuple[str, int, str]:
        """(host, port, transport) of the first ``turn:`` URL (the only one aiortc uses)."""
        for url in self.urls:
            if url.startswith("turn:"):
                rest, _, query = url[len("turn:") :].partition("?")
                host, _, port = rest.rpartition(":")
                transport = "tcp" if "transport=tcp" in query else "udp"
                return host.strip("[]"), int(port or 3478), transport
        raise CallError("turn-unreachable", "no turn: URL among the TURN server's URLs")


MEDIA_KINDS = ("audio", "video")
ICE_AND_DTLS = ("a=ice-ufrag:", "a=ice-pwd:", "a=fingerprint:")


def check_sdp(sdp: str, kind: str) -> None:
    """The shape every usable description has, checked before the call's media is touched:
    aiortc's parser takes almost anything and fails only while answering, when the working call
    has already been given up for the new one."""
    if not sdp.startswith("v=0") or "\nm=" not in sdp:
        raise CallError("sdp", f"the remote {kind} is not a session description with media")
    lines = [line.strip() for line in sdp.splitlines()]
    usable = [
        fields
        for fields in (line[2:].split() for line in lines if line.startswith("m="))
        if len(fields) >= 3 and fields[0] in MEDIA_KINDS and fields[1] != "0" and "RTP" in fields[2]
    ]
    if not usable:
        raise CallError("sdp", f"the remote {kind} has no audio or video section that is not rejected")
    for attribute in ICE_AND_DTLS:
        if not any(line.startswith(attribute) for line in lines):
            raise CallError("sdp", f"the remote {kind} has no {attribute[2:-1]}")
