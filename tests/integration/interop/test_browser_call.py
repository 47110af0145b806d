"""A real browser calls the kiosk: headless Chromium (Debian's ``chromium``, driven by
``tests/js/browser.mjs`` through playwright-core) runs ``tests/js/call-page/``, a provider call page
written from PROTOCOL.md on the PubNub JavaScript SDK and the browser's own RTCPeerConnection (fake
camera and microphone), against a Python patient endpoint with media in its child process.

Everything is real: the relay enforcing Access Manager, coturn, the clinic stand-in issuing the
page's standing token and TURN credentials through CORS, aiortc in the patient's media child. Media
is relay-only on both sides. One browser serves the whole module (each test opens its own page in
a fresh context), so the module shares one event loop.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from telehealth_client import events
from telehealth_client.consultation.patient import PatientEndpoint
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_devstack.stack import DevStack
from tests.support.consultation import Parts, RecordingHub
from tests.support.interop import JS_PROVIDER, JsPeer, ProviderPage
from tests.support.media import media_options

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

PATIENT = "pat-browser-1"
DEPARTMENT = "er"
CONSULTATION = f"consultation.{JS_PROVIDER}.{PATIENT}"
VIDEO = channels.video(CONSULTATION)
STEP = 15.0  # seconds; the bound on one step of the call on a busy 2-core machine
MEDIA = 30.0  # seconds; the bound on media flowing (a media child starting, ICE through coturn)
KIOSK_FRAMES = range(1, 61)  # the numbers the patient's camera file shows (media/test_worker.py)


# -- the stack and its parts, per test, on the module's event loop (the browser's: conftest) --------


@pytest_asyncio.fixture(loop_scope="module")
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(JS_PROVIDER,)) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module")
async def parts(stack: DevStack, tmp_path: Path) -> AsyncIterator[Parts]:
    built = Parts(stack, tmp_path)
    yield built
    await built.aclose()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: JsPeer, stack: DevStack) -> AsyncIterator[ProviderPage]:
    """A provider call page started for ``JS_PROVIDER``: standing token, TURN credentials, SDK."""
    provider_page = await ProviderPage.open(browser)
    try:
        started = await provider_page.start(stack)
        assert started["turnUrls"] == stack.turn.urls
        yield provider_page
    finally:
        await provider_page.close()
    assert provider_page.events("pageError") == []


# -- helpers ---------------------------------------------------------------------------------------


def flowing(kind: str) -> Any:
    return lambda e: isinstance(e, events.MediaFlowing) and e.media == kind


def call_phase(phase: str) -> Any:
    return lambda e: isinstance(e, events.CallStateChanged) and e.phase == phase


async def patient_in_a_joined_consultation(
    parts: Parts, page: ProviderPage, hub: RecordingHub, tmp_path: Path
) -> PatientEndpoint:
    """The patient kiosk with media checked in; the page joined: the consultation is connecting."""
    await parts.record_consent(patient=PATIENT)
    patient = parts.patient(hub, media=media_options(tmp_path, "patient"))
    await patient.check_in(
        appointment_id="appt-browser-1", patient_id=PATIENT, provider_id=JS_PROVIDER, department_id=DEPARTMENT
    )
    await hub.wait_state(S.CHECKED_IN)
    await page.run("join", consultationId=CONSULTATION)
    await hub.wait_state(S.CONNECTING)
    return patient


async def browser_media(page: ProviderPage) -> dict[str, Any]:
    """The page's stats once its inbound video has frames decoded and its audio has packets."""
    stats: dict[str, Any] = await page.run("mediaFlowing", within=MEDIA)
    assert stats["video"]["framesDecoded"] > 0 and stats["audio"]["packetsReceived"] > 0, stats
    return stats


def is_ciphertext(payload: Any) -> bool:
    return isinstance(payload, str) and base64.b64decode(payload).startswith(b"PNED")


def signals_on_the_wire(stack: DevStack) -> list[tuple[str | None, str]]:
    """(publisher, type) of every signal the relay carried on the ``.video`` channel, each checked
    to be CryptoModule ciphertext before it is opened with the stack's key."""
    crypto = RotatingCryptoModule(stack.keys.cipher_key)
    found = []
    for message in stack.relay.recent_messages(VIDEO):
        assert is_ciphertext(message.payload), f"a signal in clear text from {message.publisher}"
        found.append((message.publisher, crypto.decrypt(message.payload)["type"]))
    return found


# -- the tests -------------------------------------------------------------------------------------


async def test_the_browser_calls_the_kiosk_relay_only_and_media_flows_both_ways(
    stack: DevStack, parts: Parts, page: ProviderPage, tmp_path: Path
) -> None:
    hub = RecordingHub()
    await patient_in_a_joined_consultation(parts, page, hub, tmp_path)

    await page.run("call")
    await page.event("call", phase="connected")
    # The kiosk sees the browser's fake camera and hears its fake microphone.
    await hub.wait_for(flowing("video"), within=MEDIA)
    await hub.wait_for(flowing("audio"), within=MEDIA)
    # The browser decodes the kiosk's video and receives its audio, through TURN on both ends.
    stats = await browser_media(page)
    assert stats["selectedPair"] == {"local": "relay", "remote": "relay"}, stats
    assert stats["sentCandidates"], "the browser trickled no candidate"
    assert all(" typ relay " in line for line in stats["sentCandidates"]), stats["sentCandidates"]
    # The frames are the kiosk's camera: the numbers drawn into its pixels read back in the page.
    frames = await page.run("frameNumbers", within=MEDIA, frames=10)
    assert all(number in KIOSK_FRAMES for number in frames["numbers"]), frames
    assert len(set(frames["numbers"])) > 1, frames  # live video, not one frozen picture
    assert (frames["width"], frames["height"]) == (640, 480), frames

    # Signaling went through the relay encrypted, never stored: the offer and trickled candidates
    # from the page, the answer (candidates in its SDP) from the kiosk.
    await page.event("candidateSent")
    wire = signals_on_the_wire(stack)
    assert (JS_PROVIDER, "offer") in wire and (PATIENT, "answer") in wire, wire
    assert (JS_PROVIDER, "ice-candidate") in wire, wire
    assert stack.relay.stored_messages(VIDEO) == []


async def test_the_kiosk_calls_a_browser_already_on_the_video_channel(
    stack: DevStack, parts: Parts, page: ProviderPage, tmp_path: Path
) -> None:
    hub = RecordingHub()
    patient = await patient_in_a_joined_consultation(parts, page, hub, tmp_path)
    call = patient.call
    assert call is not None

    await call.signaling.call(JS_PROVIDER)
    # The page answers the kiosk's offer by itself.
    await page.event("signal", type="offer", publisher=PATIENT)
    await page.event("call", phase="connected")
    await hub.wait_for(flowing("video"), within=MEDIA)
    await hub.wait_for(flowing("audio"), within=MEDIA)
    stats = await browser_media(page)
    assert stats["selectedPair"] == {"local": "relay", "remote": "relay"}, stats
    frames = await page.run("frameNumbers", within=MEDIA, frames=5)
    assert all(number in KIOSK_FRAMES for number in frames["numbers"]), frames

    await page.event("candidateSent")
    wire = signals_on_the_wire(stack)
    assert wire[0] == (PATIENT, "offer"), wire
    assert (JS_PROVIDER, "answer") in wire and (JS_PROVIDER, "ice-candidate") in wire, wire


async def test_an_end_call_from_the_browser_ends_the_call_on_the_kiosk_and_is_not_echoed(
    stack: DevStack, parts: Parts, page: ProviderPage, tmp_path: Path
) -> None:
    hub = RecordingHub()
    patient = await patient_in_a_joined_consultation(parts, page, hub, tmp_path)
    await page.run("call")
    await hub.wait_for(flowing("video"), within=MEDIA)

    await page.run("hangup")
    await hub.wait_for(call_phase("ended"), within=STEP)
    call = patient.call
    assert call is not None and call.phase == "ended"
    # The kiosk ran its end of the call in the same step it announced it (an end-call of its own
    # would have been published before): the relay carried the page's end-call and no other.
    wire = signals_on_the_wire(stack)
    assert [who for who, kind in wire if kind == "end-call"] == [JS_PROVIDER], wire

    # And the page heard none: the kiosk's next signal, a new call, reaches it with nothing before it.
    await call.signaling.call(JS_PROVIDER)
    # "offer" comes once the page has handled the offer and noted it ("signal" comes before that).
    await page.event("offer", during=False)
    stats = await page.run("stats")
    from_kiosk = [s["type"] for s in stats["received"] if s["publisher"] == PATIENT]
    assert from_kiosk == ["answer", "offer"], stats["received"]  # the first call's answer, the new offer
    assert [e["reason"] for e in page.events("call") if e["phase"] == "ended"] == ["hangup"]
