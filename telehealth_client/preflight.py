"""Network preflight: can this kiosk hold a video call now? Combined with the device checks.

Three network checks, in order, each stopping the ones after it when it fails:

1. Signaling: a round trip to the PubNub origin's ``time`` endpoint. Not a publish: an idle
   kiosk holds no token and so no channel it may write (PROTOCOL.md), while ``time`` needs none
   and goes through the same origin, TLS and HTTP client as every publish.
2. TURN: credentials from the clinic backend, then an allocation with them (``probe_turn``).
3. Media: a few seconds of audio and video to an echo peer, relay-only through that TURN server,
   in a media child (media/echo_test.py, started and watched by a ``MediaSupervisor`` as a call's
   are: the agent never loads aiortc). From the kiosk side's
   ``getStats()``: round-trip time (``remote-inbound-rtp``, the lowest seen), jitter (aiortc reports RTP clock
   units: converted to ms with each codec's clock rate), loss (the worst stream, either way) and
   the achieved bitrate (bytes received over the window).

The verdict, with reasons (``judge``): ``cannot-connect`` when a check fails; ``audio-only`` when
loss is over ``poor_loss_percent``, the round trip over ``poor_rtt_ms`` or no video came back;
otherwise ``video`` (with reasons when jitter or loss miss the "good" limits). That verdict is
what ``DEVICE_STATUS`` carries as ``network`` (``PreflightReport.device_status()``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Final

from telehealth_client.logs import describe_exception
from telehealth_client.media.common import CallError, TurnConfig
from telehealth_client.outbound import Outbound
from telehealth_client.protocol.messages import NetworkVerdict
from telehealth_client.pubsub.faults import classify
from telehealth_client.pubsub.pubnub_bus import BusConfig, build_pubnub
from telehealth_client.security.clinic_client import ClinicClient, ClinicError

if TYPE_CHECKING:  # the devices package loads numpy: only the command needs it
    from devices.report import DeviceReport as CheckReport
    from telehealth_client.config import Settings
    from telehealth_client.consultation.patient import DeviceReport
    from telehealth_client.media.worker import MediaWorker

log = logging.getLogger(__name__)

# The child imports aiortc (a second or two, more on a busy machine) before it starts.
CHILD_START_SECONDS: Final = 30.0
CONNECT_SECONDS: Final = 10.0


@dataclass(frozen=True)
class Thresholds:
    """Where "good" ends and "poor" begins (settings ``preflight_*``)."""

    good_jitter_ms: float = 30.0
    good_loss_percent: float = 1.0
    poor_loss_percent: float = 5.0
    poor_rtt_ms: float = 300.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        """Each threshold from the setting of its name with ``preflight_`` before it."""
        return cls(**{each.name: getattr(settings, f"preflight_{each.name}") for each in fields(cls)})


@dataclass(frozen=True)
class Check:
    """One network check: ``name``, whether it passed, how long it took, and why not."""

    name: str
    ok: bool
    ms: float | None = None
    reason: str | None = None


@dataclass(frozen=True)
class MediaMetrics:
    rtt_ms: float | None  # None: no receiver report with a round trip arrived in the window
    jitter_ms: float
    loss_percent: float
    bitrate_kbps: float
    audio_back: bool
    video_back: bool


@dataclass(frozen=True)
class NetworkReport:
    checks: tuple[Check, ...]
    metrics: MediaMetrics | None
    verdict: NetworkVerdict
    reasons: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "reasons": list(self.reasons),
            "checks": [asdict(check) for check in self.checks],
            "metrics": None if self.metrics is None else asdict(self.metrics),
        }


def _streams(snapshot: Mapping[str, Any], kind_of: str) -> dict[str, Mapping[str, Any]]:
    return {str(s.get("kind")): s for s in snapshot.get("stats", ()) if s.get("type") == kind_of}


def metrics_from_stats(
    samples: Sequence[Mapping[str, Any]], clock_rates: Mapping[str, int], frames: Mapping[str, int]
) -> MediaMetrics:
    """The path's numbers from ``getStats()`` snapshots of the kiosk side (media/echo_test.py).

    Loss is the worst stream's over the whole call: ``inbound-rtp`` (what came back) and
    ``remote-inbound-rtp`` (what the echo side reported losing). Jitter is the worst stream's
    latest, in ms. The round trip is the lowest any receiver report gave: the path's own, without
    the scheduling delays a busy machine adds to some reports. The bitrate is what the transport
    received between the first and the last snapshot.
    """
    first, last = samples[0], samples[-1]
    received = [*_streams(last, "inbound-rtp").values(), *_streams(last, "remote-inbound-rtp").values()]
    loss = 0.0
    jitter = 0.0
    for stream in received:
        lost = max(0, int(stream.get("packetsLost") or 0))
        total = lost + max(0, int(stream.get("packetsReceived") or 0))
        if total:
            loss = max(loss, 100.0 * lost / total)
        rate = clock_rates.get(str(stream.get("kind")))
        if rate and stream.get("jitter") is not None:
            jitter = max(jitter, 1000.0 * float(stream["jitter"]) / rate)
    round_trips = [
        1000.0 * float(stream["roundTripTime"])
        for sample in samples
        for stream in _streams(sample, "remote-inbound-rtp").values()
        if stream.get("roundTripTime") is not None
    ]
    seconds = float(last["at"]) - float(first["at"])
    bytes_then = sum(int(s.get("bytesReceived") or 0) for s in _streams(first, "transport").values())
    bytes_now = sum(int(s.get("bytesReceived") or 0) for s in _streams(last, "transport").values())
    bitrate = 8.0 * max(0, bytes_now - bytes_then) / seconds / 1000.0 if seconds > 0 else 0.0
    return MediaMetrics(
        rtt_ms=min(round_trips) if round_trips else None,
        jitter_ms=jitter,
        loss_percent=loss,
        bitrate_kbps=bitrate,
        audio_back=frames.get("audio", 0) > 0,
        video_back=frames.get("video", 0) > 0,
    )


def judge(
    checks: Sequence[Check], metrics: MediaMetrics | None, limits: Thresholds
) -> tuple[NetworkVerdict, tuple[str, ...]]:
    """The verdict and its reasons (most serious first). Pure: every rule is tested at its boundary."""
    failed = tuple(f"{check.name}: {check.reason}" for check in checks if not check.ok)
    if failed:
        return "cannot-connect", failed
    if metrics is None or not (metrics.audio_back or metrics.video_back):
        return "cannot-connect", ("media: no media came back through TURN",)
    poor: list[str] = []
    if metrics.loss_percent > limits.poor_loss_percent:
        poor.append(f"packet loss {metrics.loss_percent:.1f} % is over {limits.poor_loss_percent:g} %")
    if metrics.rtt_ms is not None and metrics.rtt_ms > limits.poor_rtt_ms:
        poor.append(f"round-trip time {metrics.rtt_ms:.0f} ms is over {limits.poor_rtt_ms:g} ms")
    if not metrics.video_back:
        poor.append("no video came back through TURN")
    if poor:
        return "audio-only", tuple(poor)
    fair: list[str] = []
    if metrics.jitter_ms >= limits.good_jitter_ms:
        fair.append(f"jitter {metrics.jitter_ms:.0f} ms is not under {limits.good_jitter_ms:g} ms")
    if metrics.loss_percent >= limits.good_loss_percent:
        fair.append(f"packet loss {metrics.loss_percent:.1f} % is not under {limits.good_loss_percent:g} %")
    return "video", tuple(fair)


# -- the checks ----------------------------------------------------------------------------------


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


async def signaling_round_trip(settings: Settings) -> Check:
    """A round trip to the origin's ``time`` endpoint (no token needed: see the module's docstring)."""
    subscribe_key = settings.subscribe_key.get_secret_value() if settings.subscribe_key else ""
    config = BusConfig(
        user_id=settings.user_id,
        subscribe_key=subscribe_key,
        origin=settings.origin,
        ssl=settings.ssl,
        request_timeout_seconds=settings.request_timeout_seconds,
        outbound=Outbound.from_settings(settings),
    )
    pubnub = build_pubnub(config)
    started = time.monotonic()
    try:
        envelope = await asyncio.wait_for(pubnub.time().future(), settings.request_timeout_seconds + 1)
        if envelope.status.is_error():
            code = getattr(envelope.status, "status_code", None)
            # Without a status: what failed (the proxy, an untrusted certificate, a refused connection).
            answer = f"HTTP {code}" if code else classify(envelope)
            return Check("signaling", False, reason=f"the PubNub origin {settings.origin}: {answer}")
        return Check("signaling", True, _elapsed_ms(started))
    except TimeoutError:
        return Check("signaling", False, reason=f"the PubNub origin {settings.origin}: timed out")
    finally:
        await pubnub.stop()


async def turn_credentials(settings: Settings) -> tuple[Check, TurnConfig | None]:
    credential = settings.require_secret("device_credential").get_secret_value()
    outbound = Outbound.from_settings(settings)
    clinic = ClinicClient(
        settings.clinic_url, credential, timeout_seconds=settings.request_timeout_seconds, outbound=outbound
    )
    started = time.monotonic()
    try:
        grant = await clinic.turn_credentials(settings.user_id)
    except ClinicError as exc:
        return Check("turn-credentials", False, reason=f"the clinic backend: {exc}"), None
    finally:
        await clinic.aclose()
    turn = TurnConfig(tuple(grant.urls), grant.username, grant.credential, outbound)
    return Check("turn-credentials", True, _elapsed_ms(started)), turn


async def media_through_turn(
    turn: TurnConfig, *, relay_only: bool, seconds: float, connect_within: float = CONNECT_SECONDS
) -> tuple[list[Check], MediaMetrics | None]:
    """The TURN allocation and the media test, in a media child (media/echo_test.py) started and
    watched by a ``MediaSupervisor`` like a call's; its checks and numbers."""
    from telehealth_client.media.supervisor import MediaSupervisor

    started = time.monotonic()
    children = MediaSupervisor("preflight", start=_no_connection, in_call=lambda _child: False)
    try:
        try:
            child = await children.fresh_child()
        except Exception as exc:
            reason = f"the media test could not start ({describe_exception(exc)})"
            return [Check("media", False, reason=reason)], None
        try:
            outcome = await child.echo_test(
                turn, relay_only=relay_only, seconds=seconds, connect_within=connect_within
            )
        except CallError as exc:
            return [Check("media", False, reason=f"the media test failed ({exc.reason})")], None
        finally:
            children.close_later(child)
    finally:
        await children.aclose()
    return _child_outcome(outcome, started)


async def _no_connection(_child: MediaWorker, _turn: TurnConfig) -> None:
    raise CallError("preflight", "the preflight's media children hold no connection")


def _child_outcome(outcome: Any, started: float) -> tuple[list[Check], MediaMetrics | None]:
    if not isinstance(outcome, dict) or "turn" not in outcome:
        error = outcome.get("error") if isinstance(outcome, dict) else None
        return [Check("media", False, reason=f"the media test failed ({error or 'no result'})")], None
    allocation = outcome["turn"]
    if not allocation.get("ok"):
        return [Check("turn-allocation", False, reason=str(allocation.get("reason")))], None
    checks = [Check("turn-allocation", True, float(allocation["ms"]))]
    media = outcome.get("media") or {}
    if not media.get("ok"):
        checks.append(Check("media", False, reason=str(media.get("reason", "no result"))))
        return checks, None
    checks.append(Check("media", True, float(media["connect_ms"])))
    metrics = metrics_from_stats(media["samples"], media["clock_rates"], media["frames"])
    log.info("preflight media seconds=%.1f", time.monotonic() - started)
    return checks, metrics


async def run_network_preflight(settings: Settings) -> NetworkReport:
    """Signaling, TURN and media, each only if the one before it passed; the verdict with reasons."""
    limits = Thresholds.from_settings(settings)
    checks = [await signaling_round_trip(settings)]
    metrics: MediaMetrics | None = None
    if checks[-1].ok:
        fetched, turn = await turn_credentials(settings)
        checks.append(fetched)
        if turn is not None:
            try:
                measured, metrics = await media_through_turn(
                    turn, relay_only=settings.relay_only, seconds=settings.preflight_media_seconds
                )
            except OSError as exc:  # the child could not be started
                log.error("preflight media child failed error=%s", describe_exception(exc))
                measured = [
                    Check("media", False, reason=f"the media test could not start ({type(exc).__name__})")
                ]
            checks.extend(measured)
    verdict, reasons = judge(checks, metrics, limits)
    log.info("preflight network verdict=%s checks=%s", verdict, ",".join(c.name for c in checks if c.ok))
    return NetworkReport(tuple(checks), metrics, verdict, reasons)


async def run_preflight(
    settings: Settings, *, skip: set[str] | frozenset[str] = frozenset()
) -> PreflightReport:
    """The settings' devices checked, then the network; ``skip``: camera, microphone, speaker or
    devices (all three)."""
    from devices.check import run_device_check  # numpy and OpenCV: only when a preflight runs
    from devices.report import DeviceKind

    devices = None
    kinds: tuple[DeviceKind, ...] = ("camera", "microphone", "speaker")
    skipped = tuple(kind for kind in kinds if kind in skip)
    if "devices" not in skip and len(skipped) < 3:
        devices = await run_device_check(
            settings.camera, settings.microphone, settings.speaker, settings.device_thresholds, skip=skipped
        )
    # After the devices: the media test's numbers must not carry the device checks' CPU load.
    return PreflightReport(await run_network_preflight(settings), devices)


# -- the whole report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class PreflightReport:
    """The device checks (None when left out) and the network's verdict."""

    network: NetworkReport
    devices: CheckReport | None = None

    def device_status(self) -> DeviceReport:
        """What ``PatientEndpoint.report_devices`` publishes as ``DEVICE_STATUS``."""
        from devices.report import DeviceReport as CheckReport
        from telehealth_client.consultation.patient import DeviceReport

        devices = self.devices if self.devices is not None else CheckReport(status="ok")
        return DeviceReport.from_check(devices, network=self.network.verdict)

    @property
    def passed(self) -> bool:
        """Video possible and no device failed."""
        return self.network.verdict == "video" and (self.devices is None or self.devices.status != "fail")

    def to_dict(self) -> dict[str, Any]:
        devices = None
        if self.devices is not None:
            devices = self.devices.model_dump(mode="json")
        return {
            "passed": self.passed,
            "network": self.network.to_dict(),
            "devices": devices,
            "deviceStatus": asdict(self.device_status()),
        }

    def lines(self) -> list[str]:
        """The report for a terminal: each check, the numbers, the verdict and its reasons."""
        out = []
        for check in self.network.checks:
            took = f"{check.ms:.0f} ms" if check.ms is not None else ""
            out.append(f"{check.name:<17} {'OK' if check.ok else 'FAIL':<4}  {check.reason or took}".rstrip())
        metrics = self.network.metrics
        if metrics is not None:
            rtt = "n/a" if metrics.rtt_ms is None else f"{metrics.rtt_ms:.0f} ms"
            out.append(
                f"{'media numbers':<17}       round trip {rtt}, jitter {metrics.jitter_ms:.0f} ms, "
                f"loss {metrics.loss_percent:.1f} %, {metrics.bitrate_kbps:.0f} kbps received"
            )
        out.append(f"{'network':<17} {self.network.verdict.upper()}")
        out.extend(f"{'':<17} - {reason}" for reason in self.network.reasons)
        for step in () if self.devices is None else self.devices.steps:
            out.append(f"{step.kind:<17} {step.status.upper():<4}  {step.device or '-'}".rstrip())
            out.extend(f"{'':<17} - {reason}" for reason in step.reasons)
        status = self.device_status()
        out.append(
            f"preflight: {'PASS' if self.passed else 'FAIL'} (camera {status.camera}, microphone "
            f"{status.microphone}, speaker {status.speaker}, network {status.network})"
        )
        return out
