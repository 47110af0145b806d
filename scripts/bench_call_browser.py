"""scripts/bench_call.py --browser: a real browser on the provider's end, against the kiosk agent and,
in the same run, against bare aiortc.

Headless Chromium (tests/js/browser.mjs, Debian's chromium through playwright-core) runs the provider
call page (tests/js/call-page/), which follows PROTOCOL.md's Recovery rules. Its camera is a canvas
whose pictures carry the time they were drawn (frame_tap's layout), and it logs every remote picture
it shows. It calls, through the development stack (relay, clinic stand-in, coturn, relay-only):

- ``agent``: the kiosk agent (a ``PatientEndpoint`` checked in, media in its children, frame-tapped);
- ``raw``: bare aiortc (scripts/bench_call_peer.py, frame-tapped) behind the smallest signaling that
  works with the page, run here on a ``PubNubBus`` as the patient: answer an offer, add the page's
  trickled candidates, close on ``end-call``, publish ``end-call`` to hang up. Nothing else (no
  warm-up beyond a started peer, no rebuild).

Measured, per kind, each call ``--warmup`` seconds long, the two kinds alternated:

- ``offer_to_answer_ms``: the page's offer to the far end's answer, as the relay stamped them
  (timetokens: both published);
- ``offer_to_first_frame_ms``: from asking the page to call to the first remote picture shown in the
  browser, on the far end, and the later of the two;
- ``end_call``: ``2 * --end-calls`` calls, ended by the page and by the far end in turn: from the hang-up
  until the other side's call ended, until the far end's media process exited, and both;
- ``recovery``: one call through a TURN freeze (SIGSTOP, ``--freeze`` s), UDP between coturn's relay
  ports dropped on ``lo`` (``--drop`` s; root and iptables needed) and a coturn restart: from the
  outage's end to live video (clean, sent under 0.5 s before) on each side, corrupt pictures shown,
  and the page's offer counts (rebuilds answered, ignored, abandoned);

``--load`` runs one busy process per core beside all of it, and says so in the output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import bench_call as bench

from telehealth_client import events
from telehealth_client.connector import Connector
from telehealth_client.consultation.patient import PatientEndpoint
from telehealth_client.media.consultation_call import MediaOptions
from telehealth_client.media.worker import Devices
from telehealth_client.protocol import channels
from telehealth_client.protocol.messages import ConsultationState
from telehealth_client.pubsub.bus import Envelope
from telehealth_client.pubsub.pubnub_bus import PubNubBus
from telehealth_client.security.clinic_client import ClinicClient
from telehealth_devstack.demo.witness import Witness
from telehealth_devstack.stack import DevStack

JS_DIR = Path(__file__).resolve().parents[1] / "tests" / "js"
CHROMIUM = "/usr/bin/chromium"
PROVIDER = "dr-browser"
KIOSK = "kiosk-browser"
PATIENTS = {"agent": "pat-browser-agent", "raw": "pat-browser-raw"}
DEPARTMENT = "er"
STEP_SECONDS = 30.0
POLL_SECONDS = 0.05  # the far end's pictures are only in its log files: read again this often
STARTED = time.monotonic()


def progress(text: str) -> None:
    """One line on stderr (stdout is the JSON): where a long run is."""
    print(f"[bench --browser {time.monotonic() - STARTED:7.1f} s] {text}", file=sys.stderr, flush=True)


# -- the browser ---------------------------------------------------------------------------------------


class Browser:
    """tests/js/browser.mjs in Node: one Chromium, pages driven over JSON lines."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._ids = 0
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def launch(cls) -> Browser:
        beside = Path(sys.executable).parent / "node"
        node = str(beside) if beside.is_file() else shutil.which("node")
        if node is None or not (JS_DIR / "node_modules" / "playwright-core").is_dir():
            raise RuntimeError(
                "the browser mode needs node and tests/js/node_modules: scripts/setup.sh --test"
            )
        process = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / "browser.mjs"),
            cwd=JS_DIR,
            env={"PATH": os.environ.get("PATH", ""), "BROWSER_EXECUTABLE": CHROMIUM},
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=1 << 22,  # a frame log is one long line
        )
        browser = cls(process)
        started = await browser.event(lambda e: e["event"] in ("ready", "fatal"), 0, STEP_SECONDS)
        if started["event"] != "ready":
            await browser.aclose()
            raise RuntimeError(f"the browser did not start: {started}")
        browser.version = str(started.get("browserVersion"))
        return browser

    version = ""

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            async with self._changed:
                self.events.append(json.loads(line))
                self._changed.notify_all()
        async with self._changed:
            self.events.append({"event": "exited"})
            self._changed.notify_all()

    def mark(self) -> int:
        return len(self.events)

    async def event(
        self, matches: Callable[[dict[str, Any]], bool], after: int, within: float
    ) -> dict[str, Any]:
        def found() -> dict[str, Any] | None:
            for event in self.events[after:]:
                if matches(event):
                    return event
                if event["event"] == "exited":
                    raise RuntimeError("the browser driver exited")
            return None

        async def wait() -> dict[str, Any]:
            async with self._changed:
                await self._changed.wait_for(lambda: found() is not None)
                event = found()
                assert event is not None
                return event

        return await asyncio.wait_for(wait(), within)

    async def command(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self._ids += 1
        request = self._ids
        mark = self.mark()
        self.process.stdin.write((json.dumps({"op": op, "id": request, **fields}) + "\n").encode())
        await self.process.stdin.drain()
        answer = await self.event(lambda e: e.get("id") == request, mark, STEP_SECONDS)
        if answer["event"] != "result":
            raise RuntimeError(f"{op}: {answer.get('message')}")
        return answer

    async def aclose(self) -> None:
        if self.process.returncode is None and self.process.stdin is not None:
            with contextlib.suppress(ConnectionError):
                self.process.stdin.close()  # the driver closes the browser and exits
            try:
                await asyncio.wait_for(self.process.wait(), 10.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await asyncio.gather(self._reader, return_exceptions=True)


class Page:
    """One provider call page, started for ``PROVIDER`` with the numbered camera."""

    def __init__(self, browser: Browser, number: int) -> None:
        self.browser = browser
        self.number = number

    @classmethod
    async def open(cls, browser: Browser, stack: DevStack) -> Page:
        page = cls(browser, (await browser.command("open"))["page"])
        await page.run("start", **stack.call_page_settings(PROVIDER), camera="numbered")
        await page.run("watchFrames")
        return page

    async def run(self, method: str, **args: Any) -> Any:
        return (await self.browser.command("run", page=self.number, method=method, args=args))["value"]

    async def event(self, name: str, after: int, within: float, **fields: Any) -> dict[str, Any] | None:
        """The page's first ``name`` event since ``after`` with ``fields``, or None in ``within`` s."""

        def matches(event: dict[str, Any]) -> bool:
            return (
                event.get("page") == self.number
                and event["event"] == name
                and all(event.get(key) == value for key, value in fields.items())
            )

        try:
            return await self.browser.event(matches, after, within)
        except TimeoutError:
            return None

    def events(self, after: int = 0) -> list[dict[str, Any]]:
        return [e for e in self.browser.events[after:] if e.get("page") == self.number]


def wall_to_monotonic() -> float:
    """Add to a wall-clock time (s) to get the monotonic clock every process here shares."""
    return time.monotonic() - time.time()


class Pictures:
    """Both ends' pictures, as bench_call's ``SideFrames`` (caller: the page; callee: the far end's
    frame-tap logs in ``taps``), read as they grow."""

    def __init__(self, page: Page, taps: Path) -> None:
        self.page = page
        self.taps = taps
        self.frames = {side: bench.SideFrames() for side in bench.SIDES}
        self._positions = {"sentFrom": 0, "shownFrom": 0}
        self._files: dict[Path, int] = {}
        self._shown_by_file: dict[Path, list[tuple[int, float]]] = {}  # each media process's apart

    async def refresh(self) -> None:
        log = await self.page.run("frameLog", **self._positions)
        offset = wall_to_monotonic()
        caller = self.frames["caller"]
        caller.sent.extend((int(n), at / 1000 + offset) for n, at in log["sent"])
        caller.received.extend((int(n), at / 1000 + offset) for n, at, _ in log["shown"])
        self._positions = {"sentFrom": log["sentEnd"], "shownFrom": log["shownEnd"]}
        await asyncio.to_thread(self._read_taps)

    def _read_taps(self) -> None:
        callee = self.frames["callee"]
        for path in sorted(self.taps.glob("callee-*.tap")):
            with path.open("rb") as file:
                file.seek(self._files.get(path, 0))
                data = file.read()
            complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
            self._files[path] = self._files.get(path, 0) + len(complete)
            own = self._shown_by_file.setdefault(path, [])
            for line in complete.decode().splitlines():
                kind, number, at = line.split()
                if kind == "s":
                    callee.sent.append((int(number), float(at)))
                else:
                    callee.received.append((int(number), float(at)))
                    own.append((int(number), float(at)))

    def sorted_frames(self) -> dict[str, bench.SideFrames]:
        for side in self.frames.values():
            side.sent.sort(key=lambda item: item[1])
            side.received.sort(key=lambda item: item[1])
        self.frames["callee"].received_by_process = list(self._shown_by_file.values())
        return self.frames

    async def until(self, reached: Callable[[], bool], cap: float) -> bool:
        """Read both ends again every ``POLL_SECONDS`` until ``reached()`` (True) or ``cap`` s."""
        deadline = time.monotonic() + cap
        while True:
            await self.refresh()
            if reached():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)  # the next look at the logs, not a wait for something

    def first_shown(self, after: float) -> dict[str, float | None]:
        return {
            side: next((at for _, at in self.sorted_frames()[side].received if at >= after), None)
            for side in bench.SIDES
        }

    def live_both_ways(self, after: float) -> bool:
        shown = bench.side_shown(self.sorted_frames())
        return all(
            any(item.at >= after and bench.is_live(item) for item in items) for items in shown.values()
        )


# -- the far ends ----------------------------------------------------------------------------------------


class FarEnd:
    """What a round needs from the kiosk agent or from bare aiortc."""

    kind = ""

    async def ready(self) -> None:
        """Before a call: able to answer one."""

    def exits(self) -> list[asyncio.Future[float]]:
        """When each media process of the call under way exits (monotonic)."""
        raise NotImplementedError

    async def hangup(self) -> None:
        raise NotImplementedError

    async def ended(self, after: int, cap: float) -> float | None:
        """When its call ended (monotonic) since ``mark()`` returned ``after``, or None in ``cap`` s."""
        raise NotImplementedError

    def mark(self) -> int:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


async def exit_time(wait: Awaitable[Any]) -> float:
    await wait
    return time.monotonic()


class KioskAgent(FarEnd):
    """The patient's kiosk: a ``PatientEndpoint`` checked in, its media children frame-tapped."""

    kind = "agent"

    def __init__(
        self, patient: PatientEndpoint, witness: Witness, closers: list[Callable[[], Awaitable[Any]]]
    ):
        self.patient = patient
        self.witness = witness
        self._closers = closers

    @classmethod
    async def check_in(cls, stack: DevStack, video: Path, taps: Path, state_dir: Path) -> KioskAgent:
        clinic = ClinicClient(stack.clinic.url if stack.clinic else "", stack.kiosk_credential(KIOSK))
        hub = events.EventHub()
        witness = Witness("kiosk", hub)
        await asyncio.to_thread(taps.mkdir, parents=True, exist_ok=True)
        patient = PatientEndpoint(
            Connector(stack.bus_config(KIOSK, request_timeout_seconds=5.0), clinic),
            hub,
            state_dir=state_dir,
            kiosk_id=KIOSK,
            media=MediaOptions(
                Devices(camera=str(video), camera_is_file=True), bench.tap_env(taps, "callee")
            ),
        )

        async def close_hub() -> None:
            await witness.aclose()
            hub.close()

        far = cls(patient, witness, [clinic.aclose, close_hub, patient.aclose])
        patient_id = PATIENTS["agent"]
        await clinic.record_consent(patient_id, True, None)
        await patient.check_in(
            appointment_id="appt-browser",
            patient_id=patient_id,
            provider_id=PROVIDER,
            department_id=DEPARTMENT,
        )
        await far._seen(
            lambda e: isinstance(e, events.StateChanged) and e.state is ConsultationState.CHECKED_IN
        )
        return far

    async def _seen(self, matches: Callable[[Any], bool], after: int = 0) -> float:
        return (await asyncio.wait_for(self.witness.seen(matches, after=after), STEP_SECONDS)).at

    async def joined(self) -> None:
        await self._seen(
            lambda e: isinstance(e, events.StateChanged) and e.state is ConsultationState.CONNECTING
        )

    def exits(self) -> list[asyncio.Future[float]]:
        call = self.patient.call
        worker = None if call is None else call.worker
        return [] if worker is None else [asyncio.ensure_future(exit_time(asyncio.shield(worker.exited)))]

    async def hangup(self) -> None:
        call = self.patient.call
        assert call is not None, "the kiosk has no call"
        await call.hangup()

    def mark(self) -> int:
        return self.witness.mark()

    async def ended(self, after: int, cap: float) -> float | None:
        try:
            return await asyncio.wait_for(self._seen(bench.call_ended, after), cap)
        except TimeoutError:
            return None

    async def aclose(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                await closer()


class BareAiortc(FarEnd):
    """scripts/bench_call_peer.py answering the page as the patient, on a bus of its own."""

    kind = "raw"

    def __init__(self, bus: PubNubBus, turn: bench.Turn, video: Path, taps: Path) -> None:
        self.bus = bus
        self.turn = turn
        self.video = video
        self.taps = taps
        self.video_channel = channels.video(channels.consultation(PROVIDER, PATIENTS["raw"]))
        self.peer: bench.RawPeer | None = None
        self._answered = False
        self._waiting: list[dict[str, Any]] = []  # the page's candidates before its offer was answered
        self._ended: list[float] = []
        self._ended_changed = asyncio.Event()
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue()
        self._worker = asyncio.ensure_future(self._work())

    @classmethod
    async def subscribe(cls, stack: DevStack, turn: bench.Turn, video: Path, taps: Path) -> BareAiortc:
        clinic = ClinicClient(stack.clinic.url if stack.clinic else "", stack.kiosk_credential(KIOSK))
        try:
            await clinic.record_consent(PATIENTS["raw"], True, None)
            grant = await clinic.request_token(PATIENTS["raw"], "patient", providerId=PROVIDER)
        finally:
            await clinic.aclose()
        bus = PubNubBus(stack.bus_config(PATIENTS["raw"], token=grant.token, request_timeout_seconds=5.0))
        await asyncio.to_thread(taps.mkdir, parents=True, exist_ok=True)
        far = cls(bus, turn, video, taps)
        await bus.subscribe([far.video_channel], far._on_message)
        return far

    async def _on_message(self, envelope: Envelope) -> None:
        self._queue.put_nowait(envelope)  # one at a time, in order: a candidate waits for its offer

    async def _work(self) -> None:
        while True:
            envelope = await self._queue.get()
            with contextlib.suppress(Exception):  # a bad signal must not stop the ones after it
                await self._handle(envelope)

    async def _handle(self, envelope: Envelope) -> None:
        message = envelope.message
        if envelope.publisher != PROVIDER or not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "offer" and self.peer is not None:
            sdp = await self.peer.answer(str(message["sdp"]))
            await self._publish({"type": "answer", "sdp": sdp})
            self._answered = True
            for candidate in self._waiting:
                await self.peer.add_candidate(candidate)
            self._waiting.clear()
        elif kind == "ice-candidate" and isinstance(message.get("candidate"), dict):
            if self._answered and self.peer is not None:
                await self.peer.add_candidate(message["candidate"])
            else:
                self._waiting.append(message["candidate"])
        elif kind == "end-call":
            await self._close_peer()
            self._ended.append(time.monotonic())
            self._ended_changed.set()

    async def _publish(self, fields: dict[str, Any]) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z"
        message = {**fields, "senderId": PATIENTS["raw"], "timestamp": stamp}
        await self.bus.publish(self.video_channel, message, store=False)

    async def _close_peer(self) -> None:
        peer, self.peer = self.peer, None
        self._answered = False
        self._waiting.clear()
        if peer is not None:
            await peer.aclose()

    async def ready(self) -> None:
        if self.peer is None:
            self.peer = await bench.RawPeer.spawn(
                self.turn.config(PATIENTS["raw"]), self.video, bench.tap_env(self.taps, "callee")
            )

    def exits(self) -> list[asyncio.Future[float]]:
        return [] if self.peer is None else [asyncio.ensure_future(exit_time(self.peer.process.wait()))]

    async def hangup(self) -> None:
        await self._publish({"type": "end-call"})
        await self._close_peer()

    def mark(self) -> int:
        return len(self._ended)

    async def ended(self, after: int, cap: float) -> float | None:
        deadline = time.monotonic() + cap
        while len(self._ended) <= after:
            self._ended_changed.clear()
            try:
                await asyncio.wait_for(self._ended_changed.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return None
        return self._ended[after]

    async def aclose(self) -> None:
        self._worker.cancel()
        await asyncio.gather(self._worker, return_exceptions=True)
        await self._close_peer()
        await self.bus.aclose()


# -- one kind's measurements -----------------------------------------------------------------------------


class Line:
    """The page and one far end in one consultation."""

    def __init__(self, page: Page, far: FarEnd, pictures: Pictures) -> None:
        self.page = page
        self.far = far
        self.pictures = pictures

    async def place_call(self, cap: float) -> dict[str, Any]:
        """The page calls: offer to answer (relay timetokens) and to the first picture on each end."""
        await self.far.ready()
        mark = self.page.browser.mark()
        asked = time.monotonic()
        placed = await self.page.run("call")
        answer = await self.page.event("signal", mark, cap, type="answer")
        await self.pictures.until(lambda: None not in self.pictures.first_shown(asked).values(), cap)
        firsts = self.pictures.first_shown(asked)
        to_first = {
            side: None if at is None else round((at - asked) * 1000, 1) for side, at in firsts.items()
        }
        known = [value for value in to_first.values() if value is not None]
        return {
            "offer_to_answer_ms": None
            if answer is None
            else round((int(answer["timetoken"]) - int(placed["timetoken"])) / 1e4, 1),
            "browser_ms": to_first["caller"],
            "far_ms": to_first["callee"],
            "both_ms": max(known) if len(known) == 2 else None,
        }

    async def end_call(self, by: str, cap: float) -> dict[str, Any]:
        """``by`` (``page`` or ``far``) hangs up: until the other side's call ended, until the far
        end's media process exited, and both."""
        exits = self.far.exits()
        far_mark, page_mark = self.far.mark(), self.page.browser.mark()
        try:
            started = time.monotonic()
            if by == "page":
                await self.page.run("hangup")
                other_ended = await self.far.ended(far_mark, cap)
            else:
                await asyncio.wait_for(self.far.hangup(), cap)
                event = await self.page.event("call", page_mark, cap, phase="ended")
                other_ended = None if event is None else event["at"] / 1000 + wall_to_monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*exits), cap)
        finally:
            for task in exits:
                task.cancel()
            await asyncio.gather(*exits, return_exceptions=True)
        exited = [task.result() for task in exits if not task.cancelled()]
        children = max(exited) if exits and len(exited) == len(exits) else None
        both = None if other_ended is None or children is None else max(other_ended, children)
        return {
            "other_side_ended_ms": bench.milliseconds(other_ended, started),
            "media_process_exited_ms": bench.milliseconds(children, started),
            "ended_on_both_ms": bench.milliseconds(both, started),
        }


async def rounds(lines: dict[str, Line], settings: bench.Settings) -> dict[str, Any]:
    """``2 * end_calls`` calls per kind, the kinds alternated, ended by the page and the far end in turn."""
    samples: dict[str, list[dict[str, Any]]] = {kind: [] for kind in lines}
    ends: dict[str, dict[str, list[dict[str, Any]]]] = {kind: {"page": [], "far": []} for kind in lines}
    for index in range(2 * settings.end_calls):
        by = "page" if index % 2 == 0 else "far"
        for kind, line in lines.items():
            progress(f"call {index + 1} of {2 * settings.end_calls} to {kind}, ended by the {by}")
            samples[kind].append(await line.place_call(settings.cap))
            await asyncio.sleep(settings.warmup)  # a call under way, not a wait for something
            ends[kind][by].append(await line.end_call(by, settings.cap))
    results: dict[str, Any] = {"offer_to_answer_ms": {}, "offer_to_first_frame_ms": {}, "end_call": {}}
    for kind, taken in samples.items():
        results["offer_to_answer_ms"][kind] = bench.stats(
            [s["offer_to_answer_ms"] for s in taken if s["offer_to_answer_ms"] is not None]
        )
        results["offer_to_first_frame_ms"][kind] = {
            side: bench.stats([s[f"{side}_ms"] for s in taken if s[f"{side}_ms"] is not None])
            for side in ("browser", "far", "both")
        }
        results["offer_to_first_frame_ms"][kind]["no_first_frame"] = sum(s["both_ms"] is None for s in taken)
        results["end_call"][kind] = {
            name: {
                key: bench.stats([o[key] for o in outcomes if o[key] is not None])
                for key in ("ended_on_both_ms", "other_side_ended_ms", "media_process_exited_ms")
            }
            | {"not_ended": sum(o["ended_on_both_ms"] is None for o in outcomes)}
            for name, outcomes in (
                ("page_hangs_up", ends[kind]["page"]),
                ("far_end_hangs_up", ends[kind]["far"]),
            )
        }
    return results


async def recovery(line: Line, turn: bench.Turn, settings: bench.Settings) -> dict[str, Any]:
    """One call through a freeze, a UDP drop and a restart (in that order: bare aiortc never comes
    back from the restart)."""
    await line.place_call(settings.cap)
    page_mark = line.page.browser.mark()
    moments: dict[str, tuple[float, float]] = {}
    outages: list[tuple[str, Callable[[], Awaitable[float]]]] = [
        ("freeze", lambda: turn.freeze(settings.freeze))
    ]
    if settings.udp_drop_unusable is None:
        outages.append(("udp_drop", lambda: turn.drop_udp(settings.drop)))
    outages.append(("restart", turn.restart))
    try:
        await asyncio.sleep(settings.warmup)  # a call under way
        for name, cause in outages:
            progress(f"recovery of {line.far.kind}: {name}")
            started = time.monotonic()
            back = await cause()
            moments[name] = started, back
            await line.pictures.until(lambda: line.pictures.live_both_ways(back), settings.cap)  # noqa: B023
            await asyncio.sleep(settings.settle)  # the pictures shown after media came back are counted
        state = await line.page.run("state")
    finally:
        with contextlib.suppress(Exception):
            await line.end_call("page", settings.cap)
    frames = line.pictures.sorted_frames()
    results: dict[str, Any] = {
        name: bench.outage(frames, *moment, settings.settle, limit)
        for name, moment, limit in bench.bounded(moments)
    }
    results = bench.with_skipped(results, settings)
    page_events = [e for e in line.page.events(page_mark) if e["event"] in ("offer", "current", "abandoned")]
    results["page"] = {
        "counts": state["counts"],
        "events": [
            {k: v for k, v in e.items() if k in ("event", "outcome", "id", "previous", "reason")}
            for e in page_events
        ],
    }
    return results


# -- the run ----------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def cpu_hogs(count: int) -> Any:
    """``count`` processes spinning on a core each, ended (by their IDs) afterwards."""
    hogs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass") for _ in range(count)
    ]
    try:
        yield hogs
    finally:
        for hog in hogs:
            with contextlib.suppress(ProcessLookupError):
                hog.send_signal(signal.SIGKILL)
            await hog.wait()


async def run(settings: bench.Settings, directory: Path, taps_root: Path, load: bool) -> dict[str, Any]:
    video = await asyncio.to_thread(bench.write_video, directory / "numbered-640x480.mkv", 640, 480)
    hog_count = (os.cpu_count() or 1) if load else 0
    results: dict[str, Any] = {
        "mode": "browser: the provider page in headless Chromium calls the kiosk agent and bare aiortc",
        "machine": {"cores": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "load": f"{hog_count} busy processes (one per core) ran beside the whole run" if load else "none",
        "settings": {
            "warmup": settings.warmup,
            "calls_per_kind": 2 * settings.end_calls,
            "freeze": settings.freeze,
            "drop": settings.drop,
            "cap": settings.cap,
            "settle": settings.settle,
        },
    }
    async with cpu_hogs(hog_count), DevStack(providers=(PROVIDER,), kiosks=(KIOSK,)) as stack:
        turn = bench.Turn(stack.turn)
        browser = await Browser.launch()
        results["browser"] = browser.version
        closers: list[Callable[[], Awaitable[Any]]] = [browser.aclose]
        try:
            lines: dict[str, Line] = {}
            for kind in ("raw", "agent"):
                page = await Page.open(browser, stack)
                taps = taps_root / kind
                far: FarEnd
                if kind == "agent":
                    far = await KioskAgent.check_in(stack, video, taps, directory / "kiosk")
                else:
                    far = await BareAiortc.subscribe(stack, turn, video, taps)
                closers.append(far.aclose)
                await page.run("join", consultationId=channels.consultation(PROVIDER, PATIENTS[kind]))
                if isinstance(far, KioskAgent):
                    await far.joined()
                lines[kind] = Line(page, far, Pictures(page, taps))
            results |= await rounds(lines, settings)
            results["recovery"] = {kind: await recovery(line, turn, settings) for kind, line in lines.items()}
        finally:
            progress("closing")
            for closer in reversed(closers):
                try:
                    await asyncio.wait_for(closer(), STEP_SECONDS)
                except TimeoutError:
                    progress(
                        f"{getattr(closer, '__qualname__', closer)} did not end within {STEP_SECONDS:g} s"
                    )
                except Exception as exc:  # the next one is closed all the same
                    progress(f"{getattr(closer, '__qualname__', closer)} failed: {type(exc).__name__}")
        results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = targets(results, load)
    return results


def targets(results: dict[str, Any], load: bool) -> dict[str, Any]:
    def p(value: dict[str, Any] | None, key: str = "p50") -> float | None:
        return None if value is None else float(value[key])

    found: dict[str, Any] = {}
    answer = p(results["offer_to_answer_ms"]["agent"])
    found["offer_to_answer"] = bench.target(
        "the kiosk's answer published under 150 ms after the browser's offer (p50)",
        {"agent_p50_ms": answer, "raw_p50_ms": p(results["offer_to_answer_ms"]["raw"])},
        None if answer is None else answer < 150,
    )
    agent_first = p(results["offer_to_first_frame_ms"]["agent"]["both"])
    raw_first = p(results["offer_to_first_frame_ms"]["raw"]["both"])
    found["offer_to_first_frame_both_ways"] = bench.target(
        "offer to first picture on both ends (p50): the kiosk agent below bare aiortc, same browser",
        {"agent_p50_ms": agent_first, "raw_p50_ms": raw_first},
        None if agent_first is None or raw_first is None else agent_first < raw_first,
    )
    agent = results["recovery"]["agent"]
    for name, limit in (("freeze", 2.0), ("udp_drop", 2.0), ("restart", 3.0)):
        outcome = agent.get(name, {})
        if "skipped" in outcome:
            found[f"back_after_{name}"] = bench.target(
                f"live video both ways within {limit:g} s", outcome, None
            )
            continue
        back = outcome.get("both_live_back_s")
        raw_back = results["recovery"]["raw"].get(name, {}).get("both_live_back_s")
        found[f"back_after_{name}"] = bench.target(
            f"agent: live video (clean, sent under 0.5 s before) on both ends within {limit:g} s "
            f"of the {name}'s end",
            {"agent_s": back, "raw_s": raw_back},
            back is not None and back <= limit,
        )
    corrupt = {
        name: sum(outcome["corrupt_frames_shown"].values())
        for name, outcome in agent.items()
        if isinstance(outcome, dict) and "corrupt_frames_shown" in outcome
    }
    found["corrupt_frames_shown"] = bench.target(
        "agent: 0 corrupt pictures shown on either end through every outage",
        corrupt,
        sum(corrupt.values()) == 0,
    )
    worst = {
        name: p(outcome["ended_on_both_ms"], "p95") if not outcome["not_ended"] else None
        for name, outcome in results["end_call"]["agent"].items()
    }
    found["end_call_within_1s"] = bench.target(
        "agent: end-call to both sides ended (the other call ended, the kiosk's media process exited) under "
        f"1 s at p95, {'with the machine loaded' if load else 'NOT loaded (run with --load for the target)'}",
        {"agent_p95_ms": worst},
        all(value is not None and value < 1000 for value in worst.values()),
    )
    return found
