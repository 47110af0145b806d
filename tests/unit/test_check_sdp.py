"""check_sdp: what a remote description must have before any media child is asked to use it (one
that fails the check is refused at once, with its reason); and the offer the kiosk answers as the
DTLS client."""

from __future__ import annotations

import pytest

from telehealth_client.media.common import CallError, as_dtls_client_offer, check_sdp

FINGERPRINT = "a=fingerprint:sha-256 " + ":".join(["AB"] * 32)
# The shape Chromium offers: port 9 placeholders, ICE and DTLS attributes per media section.
BROWSER_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:Ab12",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        FINGERPRINT,
        "a=setup:actpass",
        "a=mid:0",
        "a=sendrecv",
        "a=rtpmap:111 opus/48000/2",
        "m=video 9 UDP/TLS/RTP/SAVPF 96",
        "c=IN IP4 0.0.0.0",
        "a=ice-ufrag:Ab12",
        "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        FINGERPRINT,
        "a=setup:actpass",
        "a=mid:1",
        "a=sendrecv",
        "a=rtpmap:96 VP8/90000",
        "",
    ]
)


def refused(sdp: str) -> str:
    with pytest.raises(CallError) as caught:
        check_sdp(sdp, "offer")
    assert caught.value.code == "sdp"
    assert str(caught.value) == f"sdp: {caught.value.reason}"  # what a traceback shows
    return caught.value.reason


def test_a_browsers_offer_passes() -> None:
    check_sdp(BROWSER_OFFER, "offer")
    # One section rejected, the other usable: still a call (audio only).
    check_sdp(BROWSER_OFFER.replace("m=video 9 ", "m=video 0 "), "offer")


def test_every_media_section_rejected_is_refused() -> None:
    sdp = BROWSER_OFFER.replace("m=audio 9 ", "m=audio 0 ").replace("m=video 9 ", "m=video 0 ")
    assert refused(sdp) == "the remote offer has no audio or video section that is not rejected"


def test_only_a_data_channel_is_refused() -> None:
    sdp = BROWSER_OFFER.split("m=audio")[0] + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"
    sdp += f"a=ice-ufrag:Ab12\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n{FINGERPRINT}\r\n"
    assert refused(sdp) == "the remote offer has no audio or video section that is not rejected"


@pytest.mark.parametrize(
    ("attribute", "name"),
    [("a=ice-ufrag:", "ice-ufrag"), ("a=ice-pwd:", "ice-pwd"), ("a=fingerprint:", "fingerprint")],
)
def test_a_description_without_ice_or_dtls_credentials_is_refused(attribute: str, name: str) -> None:
    sdp = "\r\n".join(line for line in BROWSER_OFFER.split("\r\n") if not line.startswith(attribute))
    assert refused(sdp) == f"the remote offer has no {name}"


@pytest.mark.parametrize("sdp", ["", "hello", "v=0\r\ns=-\r\n", "m=audio 9 RTP/AVP 0\r\n"])
def test_what_is_not_a_description_with_media_is_refused(sdp: str) -> None:
    assert refused(sdp) == "the remote offer is not a session description with media"


@pytest.mark.parametrize(
    "sdp",
    [
        # The only usable section lists no payload format.
        BROWSER_OFFER.replace("m=audio 9 ", "m=audio 0 ").replace("SAVPF 96", "SAVPF"),
        # A usable audio section, and a video section without a format beside it.
        BROWSER_OFFER.replace("SAVPF 96", "SAVPF"),
        BROWSER_OFFER.replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=video 0 UDP/TLS/RTP/SAVPF"),
    ],
)
def test_a_media_section_without_a_format_is_refused(sdp: str) -> None:
    # aiortc's parser fails on any m= line without "kind port proto format...", while answering.
    assert refused(sdp) == "the remote offer has a media section without a format"


def aiortc_parses(sdp: str) -> bool:
    """Whether aiortc's own parser (what answering runs) takes the description."""
    from aiortc.sdp import SessionDescription

    try:
        SessionDescription.parse(sdp)
    except Exception:
        return False
    return True


UNREADABLE_BY_AIORTC = [
    (BROWSER_OFFER.replace("SAVPF 96", "SAVPF vp8"), "a media format that is not an RTP payload type"),
    (BROWSER_OFFER.replace("SAVPF 96", "SAVPF 300"), "a media format that is not an RTP payload type"),
    (BROWSER_OFFER.replace("SAVPF 96", "SAVPF 72"), "a media format that is not an RTP payload type"),
    (BROWSER_OFFER.replace("SAVPF 96", "SAVPF ²"), "a media format that is not an RTP payload type"),
    (
        BROWSER_OFFER.replace("m=video 9 ", "m=video x "),
        "a media section whose port or protocol is unreadable",
    ),
    (
        BROWSER_OFFER.replace("m=video 9 UDP/TLS/RTP/SAVPF", "m=video 9 udp/tls/rtp/savpf"),
        "a media section whose port or protocol is unreadable",
    ),
    (
        BROWSER_OFFER.replace("a=setup:actpass", "a=setup:sideways", 1),
        "a DTLS setup that is not active, passive or actpass",
    ),
]


@pytest.mark.parametrize(("sdp", "reason"), UNREADABLE_BY_AIORTC)
def test_what_aiortcs_parser_would_fail_on_is_refused_first(sdp: str, reason: str) -> None:
    assert aiortc_parses(BROWSER_OFFER) and not aiortc_parses(sdp)
    assert refused(sdp) == f"the remote offer has {reason}"


def test_an_offer_saying_setup_active_is_answered_as_the_dtls_client() -> None:
    """PROTOCOL.md, Recovery: the answer to an offer that restarts ICE on a browser's live
    connection says ``a=setup:active``; aiortc answers ``active`` to ``actpass`` (and ``passive``)."""
    restarted = BROWSER_OFFER.replace("a=setup:actpass", "a=setup:active")
    assert restarted.count("a=setup:active\r\n") == 2
    assert as_dtls_client_offer(restarted) == BROWSER_OFFER
    assert as_dtls_client_offer(BROWSER_OFFER) == BROWSER_OFFER
    passive = BROWSER_OFFER.replace("a=setup:actpass", "a=setup:passive")
    assert as_dtls_client_offer(passive) == passive
