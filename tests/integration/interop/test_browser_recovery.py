"""A real browser on the other end of a recovering call (PROTOCOL.md, "Recovery: an offer during a
call is a rebuild").

Headless Chromium runs ``tests/js/call-page/`` (the provider page: an offer during a call answered on
a new connection, the old one kept on screen until the new one decodes a frame) against a Python
patient kiosk with media in its child, relay-only through the development stack's coturn, which is
then frozen, restarted, or cut off (UDP between its relay ports dropped). Both cameras draw numbers
(``live_frames``), so "live video both ways" means pictures sent less than 0.5 s before they were
shown, on both sides, and a corrupt picture is one unreadable or gone backwards.

The targets (live within 2 s of a 10 s freeze's end, 3 s of a restart) are measured by
``scripts/bench_call.py --browser``; here the bound is generous and the time taken is printed.

One browser and one stack serve the module (each test has its own page, patient and consultation);
every coturn fault is undone in a ``finally`` and checked again after each test.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from telehealth_client import events
from telehealth_client.consultation.patient import PatientEndpoint
from telehealth_client.media.consultation_call import MediaOptions
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import ConsultationState as S
from telehealth_client.pubsub.crypto import RotatingCryptoModule
from telehealth_devstack.stack import DevStack
from tests.support.consultation import Parts, RecordingHub
from tests.support.interop import JS_PROVIDER, JsPeer, ProviderPage
from tests.support.media import child_env

from .live_frames import LiveVideo, kiosk_tap_env, write_numbered_video
from .turn_faults import TurnFaults, iptables_unusable

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

log = logging.getLogger(__name__)

DEPARTMENT = "er"
OUTAGE = 10.0  # seconds coturn is frozen or cut off
STEP = 15.0  # one step of the call on a busy 2-core machine
MEDIA = 30.0  # the first media of a call (a media child starting, ICE through coturn)
BACK = 10.0  # live video both ways after an outage: generous (targets 2 s and 3 s, benchmarked)
PATIENT_NUMBERS = itertools.count(1)  # each test's own patient (the stack is the module's)


# -- one stack, one camera file for the module (and one browser: conftest) --------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[DevStack]:
    async with DevStack(providers=(JS_PROVIDER,)) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def faults(stack: DevStack) -> AsyncIterator[TurnFaults]:
    yield TurnFaults(stack.turn)


@pytest_asyncio.fixture(autouse=True, loop_scope="module")
async def turn_healed(faults: TurnFaults) -> AsyncIterator[None]:
    """After every test, whatever it did: coturn resumed and running, no iptables rule left."""
    yield
    await faults.heal()


@pytest.fixture(scope="module")
def kiosk_camera(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_numbered_video(tmp_path_factory.mktemp("camera") / "kiosk.mkv")


@pytest_asyncio.fixture(loop_scope="module")
async def parts(stack: DevStack, tmp_path: Path) -> AsyncIterator[Parts]:
    built = Parts(stack, tmp_path)
    yield built
    await built.aclose()


# -- one call ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class CallUnderWay:
    page: ProviderPage
    patient: PatientEndpoint
    hub: RecordingHub
    video: LiveVideo
    consultation: str
    patient_id: str

    async def state(self) -> dict[str, Any]:
        found: dict[str, Any] = await self.page.run("state")
        return found

    def kiosk_call_ended(self) -> bool:
        return any(isinstance(e, events.CallStateChanged) and e.phase == "ended" for e in self.hub.items)


async def open_page(browser: JsPeer, stack: DevStack, **options: Any) -> ProviderPage:
    page = await ProviderPage.open(browser)
    await page.start(stack, camera="numbered", **options)
    await page.run("watchFrames")
    return page


@pytest.fixture
def page_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The page's start options; a test sets them with an indirect parameter."""
    options: dict[str, Any] = getattr(request, "param", {})
    return options


@pytest_asyncio.fixture(loop_scope="module")
async def call_under_way(
    page_options: dict[str, Any],
    browser: JsPeer,
    stack: DevStack,
    parts: Parts,
    kiosk_camera: Path,
    tmp_path: Path,
) -> AsyncIterator[CallUnderWay]:
    """The page (started with ``page_options``) called the kiosk of a patient of this test's own;
    live video both ways."""
    page = await open_page(browser, stack, **page_options)
    try:
        patient_id = f"pat-recovery-{next(PATIENT_NUMBERS)}"
        consultation = channels.consultation(JS_PROVIDER, patient_id)
        taps = tmp_path / "taps"
        taps.mkdir()
        env, devices = child_env(tmp_path, "patient")
        media = MediaOptions(
            dataclasses.replace(devices, camera=str(kiosk_camera), camera_is_file=True),
            {**env, **kiosk_tap_env(taps)},
        )
        hub = RecordingHub()
        await parts.record_consent(patient=patient_id)
        patient = parts.patient(hub, media=media)
        await patient.check_in(
            appointment_id=f"appt-{patient_id}",
            patient_id=patient_id,
            provider_id=JS_PROVIDER,
            department_id=DEPARTMENT,
        )
        await hub.wait_state(S.CHECKED_IN)
        await page.run("join", consultationId=consultation)
        await hub.wait_state(S.CONNECTING)
        video = LiveVideo(lambda **positions: page.run("frameLog", **positions), taps)
        called = time.monotonic()
        await page.run("call")
        await page.event("call", phase="connected")
        setup = await video.live_both_ways(after=called, within=MEDIA)
        log.info("call set up: live video both ways %.3f s after the call", setup)
        yield CallUnderWay(page, patient, hub, video, consultation, patient_id)
    finally:
        log.info("the page's call: %s", trail(page))
        await page.close()
    assert page.events("pageError") == []


TRAIL_EVENTS = ("call", "signal", "offer", "connection", "media", "current", "abandoned", "dropped", "error")
TRAIL_FIELDS = ("phase", "reason", "type", "outcome", "id", "role", "state", "previous", "field", "where")


def trail(page: ProviderPage) -> str:
    """The page's call as it saw it (event names and codes only), for a failure's log."""
    first = next((e["at"] for e in page.driver.events if e.get("page") == page.number and "at" in e), 0)
    return "; ".join(
        f"{(e['at'] - first) / 1000:+.3f} {e['event']} "
        + " ".join(f"{k}={e[k]}" for k in TRAIL_FIELDS if k in e)
        for e in page.driver.events
        if e.get("page") == page.number and e["event"] in TRAIL_EVENTS
    )


def report(name: str, seconds: float, since: str) -> None:
    """The measured time in the test's output (pytest -s, or the captured output of a failure)."""
    print(f"{name}: live video both ways {seconds:.3f} s after {since}")
    log.warning("%s: live video both ways %.3f s after %s", name, seconds, since)


def signals_on_the_wire(stack: DevStack, consultation: str) -> list[tuple[str | None, str]]:
    """(publisher, type) of every signal the relay carried on the consultation's ``.video``."""
    crypto = RotatingCryptoModule(stack.keys.cipher_key)
    return [
        (message.publisher, crypto.decrypt(message.payload)["type"])
        for message in stack.relay.recent_messages(channels.video(consultation))
    ]


def end_calls_on_the_wire(stack: DevStack, consultation: str) -> list[str | None]:
    return [who for who, kind in signals_on_the_wire(stack, consultation) if kind == "end-call"]


async def back_after(
    call: CallUnderWay, name: str, started: float, ended: float, since: str = "the outage ended"
) -> None:
    """Live video both ways within ``BACK`` s of ``ended``, no corrupt picture shown on either side
    since ``started``, and the call never ended (on the page, on the kiosk)."""
    seconds = await call.video.live_both_ways(after=ended, within=BACK)
    report(name, seconds, since)
    assert call.video.corrupt(since=started) == {"browser": 0, "kiosk": 0}, call.video.summary()
    state = await call.state()
    assert state["phase"] == "connected", state
    assert not call.kiosk_call_ended()


# -- the tests ---------------------------------------------------------------------------------------


async def test_a_10_s_turn_freeze_comes_back_with_live_video_both_ways(
    call_under_way: CallUnderWay, faults: TurnFaults, stack: DevStack
) -> None:
    started = time.monotonic()
    resumed = await faults.freeze(OUTAGE)
    await back_after(call_under_way, "freeze", started, resumed)
    assert end_calls_on_the_wire(stack, call_under_way.consultation) == []


async def test_a_turn_restart_comes_back_with_live_video_both_ways(
    call_under_way: CallUnderWay, faults: TurnFaults, stack: DevStack
) -> None:
    started = time.monotonic()
    restarted = await faults.restart()
    await back_after(call_under_way, "restart", started, restarted)
    # Nothing of the old connections can come back (their allocations are gone): the call runs on
    # a rebuilt connection, the page's old one closed.
    state = await call_under_way.state()
    assert state["currentId"] != 1 and state["counts"]["rebuilds"] >= 1, state
    assert end_calls_on_the_wire(stack, call_under_way.consultation) == []


async def test_udp_between_the_relay_ports_dropped_for_10_s_comes_back_with_live_video(
    call_under_way: CallUnderWay, faults: TurnFaults, stack: DevStack
) -> None:
    reason = iptables_unusable()
    if reason is not None:
        pytest.skip(reason)
    started = time.monotonic()
    restored = await faults.drop_udp(OUTAGE)
    await back_after(call_under_way, "udp drop", started, restored)
    assert end_calls_on_the_wire(stack, call_under_way.consultation) == []


@pytest.mark.parametrize("page_options", [{"ignoreOffersDuringCall": True}], ids=["older-app"], indirect=True)
async def test_a_page_that_ignores_offers_during_a_call_still_gets_its_call_back_after_a_freeze(
    call_under_way: CallUnderWay, faults: TurnFaults, stack: DevStack
) -> None:
    # An older provider app: it never answers a rebuild. The kiosk must keep its connection while
    # it rebuilds (make before break), so the path that comes back by itself carries the call.
    started = time.monotonic()
    resumed = await faults.freeze(OUTAGE)
    await back_after(call_under_way, "freeze, page ignoring offers", started, resumed)
    state = await call_under_way.state()
    assert state["currentId"] == 1 and state["counts"]["offersAnswered"] == 0, state
    assert state["counts"]["offersIgnored"] == state["counts"]["offersReceived"], state
    assert end_calls_on_the_wire(stack, call_under_way.consultation) == []


async def test_the_page_rebuilds_its_connection_mid_call_and_the_kiosk_follows(
    call_under_way: CallUnderWay, stack: DevStack
) -> None:
    page = call_under_way.page
    started = time.monotonic()
    rebuilt = await page.run("rebuild")
    new_id = rebuilt["id"]
    assert new_id == 2, rebuilt
    # The old connection stays on screen until the new one decodes a frame, then it is closed.
    moved = await page.event("current", id=new_id, within=STEP)
    assert moved["previous"] == 1, moved
    await page.event("connection", id=1, state="closed")
    switched = time.monotonic()
    print(f"page rebuild: the picture moved to the new connection {switched - started:.3f} s after it began")
    order = [
        (e["event"], e.get("id"), e.get("state"))
        for e in page.driver.events
        if e.get("page") == page.number and e["event"] in ("media", "connection")
    ]
    assert order.index(("media", new_id, None)) < order.index(("connection", 1, "closed")), order
    await back_after(call_under_way, "page rebuild", started, switched, "the picture moved")
    state = await call_under_way.state()
    assert state["currentId"] == new_id and state["nextId"] is None, state
    old = next(c for c in state["connections"] if c["id"] == 1)
    assert old["place"] == "closed" and old["framesDecoded"] > 0, old
    # On the wire: two offers from the page, each answered by the kiosk, and no end-call.
    wire = signals_on_the_wire(stack, call_under_way.consultation)
    assert [kind for who, kind in wire if who == JS_PROVIDER and kind == "offer"] == ["offer", "offer"], wire
    assert [who for who, kind in wire if kind == "answer"] == [call_under_way.patient_id] * 2, wire
    assert "end-call" not in [kind for _, kind in wire], wire
