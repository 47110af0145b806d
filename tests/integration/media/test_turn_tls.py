"""TURN over TLS (``turns:``), what a clinic backend hands out when its TURN server listens on 443:
two MediaCalls given only the ``turns:`` URL of real coturn's TLS listener hold a relay-only call,
and a TURN server whose certificate is not trusted is named, not waited on."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import (
    AudioStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
)

from telehealth_client.media.call import CallError, MediaCall, TurnConfig, probe_turn, relay_candidates
from telehealth_devstack.turn import TurnServer
from tests.support.media import WAIT, Receiver, only_relay, turn_config

from .numbered import NumberedVideoTrack

pytestmark = pytest.mark.integration


async def test_a_call_given_only_a_turns_url_carries_video_both_ways(
    tls_turn: TurnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OpenSSL reads SSL_CERT_FILE whenever a default context is made: aiortc's, and the probe's.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_turn.ca_file))
    provider_config, patient_config = (
        turn_config(tls_turn, "dr-lee", tls=True),
        turn_config(tls_turn, tls=True),
    )
    assert all(url.startswith("turns:") for url in provider_config.urls + patient_config.urls)
    at_provider, at_patient = Receiver(30), Receiver(30)
    provider = MediaCall(
        provider_config, tracks=[NumberedVideoTrack(1000), AudioStreamTrack()], on_frame=at_provider
    )
    patient = MediaCall(
        patient_config, tracks=[NumberedVideoTrack(1), AudioStreamTrack()], on_frame=at_patient
    )
    try:
        offer = await provider.offer()
        answer = await patient.answer(offer)
        await provider.accept_answer(answer)
        assert only_relay(offer) and only_relay(answer)
        assert relay_candidates(offer) >= 1 and relay_candidates(answer) >= 1
        await asyncio.wait_for(asyncio.gather(at_provider.done.wait(), at_patient.done.wait()), WAIT)
    finally:
        await provider.aclose()
        await patient.aclose()
    assert at_patient.numbers == sorted(at_patient.numbers) and at_patient.numbers[0] >= 1000
    assert at_provider.numbers == sorted(at_provider.numbers) and 1 <= at_provider.numbers[0] < 1000


async def test_an_untrusted_turn_certificate_is_named(
    tls_turn: TurnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The system's CAs only: the development CA is not among them.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    config = turn_config(tls_turn, tls=True)
    with pytest.raises(CallError) as untrusted:
        await probe_turn(config)
    assert (untrusted.value.code, untrusted.value.reason) == (
        "turn-unreachable",
        "TURN server's TLS certificate is not trusted (unable to get local issuer certificate)",
    )
    with pytest.raises(CallError) as refused:  # a call is not started on it either
        await MediaCall(config).offer()
    assert refused.value.reason == untrusted.value.reason
    # The same server, its CA trusted: the probe's allocation is made.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_turn.ca_file))
    await probe_turn(config)


async def _relay_candidates_gathered(config: TurnConfig) -> int:
    """What aiortc itself gathers through ``config``'s TURN server, relay-only, without our probe."""
    server = RTCIceServer(list(config.urls), config.username, config.credential)
    connection = RTCPeerConnection(RTCConfiguration([server], RTCIceTransportPolicy.RELAY))
    try:
        connection.addTransceiver("video")
        await connection.setLocalDescription(await connection.createOffer())
        return relay_candidates(connection.localDescription.sdp)
    finally:
        await connection.close()


async def test_aiortc_verifies_the_turn_certificate_and_fails_silently(
    tls_turn: TurnServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Why the probe names an untrusted certificate: aiortc verifies it (a default context,
    # SSL_CERT_FILE honoured) but then just gathers no relay candidate and says nothing.
    config = turn_config(tls_turn, tls=True)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    assert await _relay_candidates_gathered(config) == 0
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_turn.ca_file))
    assert await _relay_candidates_gathered(config) >= 1
