"""Issue 19's clinic outage, in real processes: is a visit still there after the clinic comes back?

A kiosk agent and a provider agent, each its own process (the JSON-line harness of
``tests/support/agent_harness.py``, a real ``Agent`` from ``TELEHEALTH_*``
settings), hold a relay-only call on the development stack (relay with Access Manager, clinic
stand-in, coturn). The kiosk reaches the clinic through a ``CuttableLink``; patient tokens last
1 minute (PubNub's shortest). Mid-call the link is cut for longer than the token has left to live.
Then: chat both ways during the outage, the link restored, everything queued delivered once; last,
the patient's consent is withdrawn, and the clinic's refusal at the next refresh ends the
consultation, which the provider must hear of.

Prints one JSON object: the time line (seconds from the cut), call-quality reports seen from each
media child during the outage (the call goes on), chat sent / shown / duplicated, the states of
both sides, and whether anything ended the visit before the refusal. Exit 0 when the visit
outlived the outage, every chat arrived once and the refusal reached the provider; 1 otherwise.

    .venv/bin/python scripts/clinic_outage.py [--outage SECONDS] [--json-only]

About 2.5 minutes with the defaults (the token must really expire at the relay, and the kiosk
refreshes at 80 % of its TTL, retrying 1, 2, 4, 8, 16 s apart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devices import synthetic  # noqa: E402
from telehealth_client.security.clinic_client import ClinicClient  # noqa: E402
from telehealth_devstack.clinic import RateLimit  # noqa: E402
from telehealth_devstack.network import CuttableLink  # noqa: E402
from telehealth_devstack.stack import DevStack  # noqa: E402
from tests.support.agent_child import AgentChild  # noqa: E402

PROVIDER, PATIENT, KIOSK, DEPARTMENT = "dr-lee", "pat-outage", "kiosk-outage", "er"
CONSULTATION = f"consultation.{PROVIDER}.{PATIENT}"
TOKEN_LIFE = 60.0


def devices_environment(directory: Path) -> dict[str, str]:
    directory.mkdir(parents=True, exist_ok=True)
    video = synthetic.write_video(directory / "camera.mkv", "normal", frames=30, width=320, height=240)
    tone = synthetic.write_pcm(directory / "microphone.raw", "tone", seconds=10.0)
    alsa = synthetic.write_alsa_config(directory / "alsa", tone, loopback=False)
    assert alsa.microphone is not None and alsa.speaker is not None
    return {
        "TELEHEALTH_CAMERA": str(video),
        "TELEHEALTH_MICROPHONE": alsa.microphone,
        "TELEHEALTH_SPEAKER": alsa.speaker,
        **alsa.env,
    }


def event(kind: str, **fields: Any) -> Callable[[dict[str, Any]], bool]:
    return lambda line: line.get("event") == kind and all(line.get(k) == v for k, v in fields.items())


def count(agent: AgentChild, kind: str, since: int = 0) -> int:
    return sum(1 for line in agent.lines[since:] if line.get("event") == kind)


async def chat_ids(agent: AgentChild, consultation: bool) -> list[str]:
    fields = {"consultationId": CONSULTATION} if consultation else {}
    reply = await agent.command("chat-log", **fields)
    return [entry["id"] for entry in reply["entries"]]


async def run(outage: float, work: Path) -> dict[str, Any]:
    report: dict[str, Any] = {"outage_seconds": outage, "timeline": {}}
    timeline = report["timeline"]
    # The kiosk's patient token is renewed every minute and asked for again after the outage: a
    # limit well above that pace, so the scenario measures the outage and never a 429.
    limit = RateLimit(per_minute=600, burst=100)
    async with DevStack(
        providers=(PROVIDER,), kiosks=(KIOSK,), token_ttl_minutes={"patient": 1}, patient_token_limit=limit
    ) as stack:
        assert stack.clinic is not None
        kiosk_clinic = ClinicClient(stack.clinic.url, stack.kiosk_credential(KIOSK))
        await kiosk_clinic.record_consent(PATIENT, True, None)
        async with CuttableLink(f"127.0.0.1:{stack.clinic.port}") as link:
            provider_env = {
                **stack.agent_environment(PROVIDER),
                "TELEHEALTH_STATE_DIR": str(work / "provider-state"),
                **devices_environment(work / "provider-devices"),
            }
            kiosk_env = {
                **stack.agent_environment(),
                "TELEHEALTH_USER_ID": KIOSK,
                "TELEHEALTH_ROLE": "patient",
                "TELEHEALTH_CLINIC_URL": f"http://{link.origin}",
                "TELEHEALTH_STATE_DIR": str(work / "kiosk-state"),
                **devices_environment(work / "kiosk-devices"),
            }
            provider = await AgentChild.start(provider_env)
            kiosk = await AgentChild.start(kiosk_env)
            try:
                for agent in (provider, kiosk):
                    await agent.wait_line(event("started"))
                checked_in = await kiosk.command(
                    "check-in",
                    appointmentId="appt-outage",
                    patientId=PATIENT,
                    providerId=PROVIDER,
                    departmentId=DEPARTMENT,
                )
                assert checked_in["ok"], checked_in
                granted = time.monotonic()
                await provider.wait_line(event("state-changed", state="checked-in"))
                assert (await provider.command("join", consultationId=CONSULTATION))["ok"]
                assert (await provider.command("call", consultationId=CONSULTATION))["ok"]
                for agent in (provider, kiosk):
                    await agent.wait_line(event("media-flowing", media="video"), within=60.0)
                    await agent.wait_line(event("state-changed", state="in-progress"), within=60.0)

                link.cut()
                cut = time.monotonic()
                report["token_life_left_at_cut_seconds"] = round(TOKEN_LIFE - (cut - granted), 1)
                marks = {"kiosk": len(kiosk.lines), "provider": len(provider.lines)}

                def at() -> float:
                    return round(time.monotonic() - cut, 1)

                await kiosk.wait_line(event("access-renewing"), within=TOKEN_LIFE + 30)
                timeline["kiosk_says_access_renewing"] = at()
                # Wait out the token's life, then chat both ways while the clinic is still away.
                await asyncio.sleep(
                    max(0.0, TOKEN_LIFE - (time.monotonic() - granted)) + 2.0
                )  # a scenario pause
                timeline["token_expired_by"] = at()
                during_provider = await provider.command(
                    "chat", consultationId=CONSULTATION, text="still there?"
                )
                during_kiosk = await kiosk.command("chat", text="yes, still here")
                timeline["chat_sent_during_outage"] = at()
                remaining = outage - (time.monotonic() - cut)
                await asyncio.sleep(max(0.0, remaining))  # the outage's length is the scenario's input
                report["during_outage"] = {
                    "kiosk_call_quality_reports": count(kiosk, "call-quality", marks["kiosk"]),
                    "provider_call_quality_reports": count(provider, "call-quality", marks["provider"]),
                    "kiosk_media_failed": count(kiosk, "media-failed", marks["kiosk"]),
                    "kiosk_session_closed": count(kiosk, "session-closed", marks["kiosk"]),
                    "kiosk_access_denied": count(kiosk, "access-denied", marks["kiosk"]),
                    "kiosk_state": (await kiosk.command("status"))["state"],
                }
                link.restore()
                timeline["clinic_back"] = at()
                await kiosk.wait_line(event("access-renewed"), within=90.0)
                timeline["kiosk_says_access_renewed"] = at()
                await provider.wait_line(event("chat-message", message_id=during_kiosk["id"]), within=30.0)
                timeline["kiosk_chat_shown_at_provider"] = at()
                await kiosk.wait_line(event("chat-message", message_id=during_provider["id"]), within=30.0)
                timeline["provider_chat_shown_at_kiosk"] = at()
                after = await kiosk.command("chat", text="thanks")
                await provider.wait_line(event("chat-message", message_id=after["id"]), within=30.0)
                kiosk_view, provider_view = await chat_ids(kiosk, False), await chat_ids(provider, True)
                sent = [during_provider["id"], during_kiosk["id"], after["id"]]
                report["chat"] = {
                    "sent": len(sent),
                    "shown_at_kiosk": sum(1 for i in kiosk_view if i in sent),
                    "shown_at_provider": sum(1 for i in provider_view if i in sent),
                    "duplicated": len(kiosk_view)
                    - len(set(kiosk_view))
                    + len(provider_view)
                    - len(set(provider_view)),
                    "same_order_both_sides": kiosk_view == provider_view,
                }
                report["after_outage_state"] = {
                    "kiosk": (await kiosk.command("status"))["state"],
                    "provider": (await provider.command("status"))["consultations"][CONSULTATION]["state"],
                }

                # The clinic's own verdict: consent withdrawn; refused at the kiosk's next refresh.
                await kiosk_clinic.record_consent(PATIENT, False, None)
                withdrawn = time.monotonic()
                cancelled = await provider.wait_line(event("state-changed", state="cancelled"), within=90.0)
                report["refusal"] = {
                    "provider_told_after_seconds": round(time.monotonic() - withdrawn, 1),
                    "cancel_reason": cancelled.get("cancel_reason"),
                }
                await kiosk.wait_line(event("idle"), within=30.0)
                report["refusal"]["kiosk_idle"] = True
            finally:
                for agent in (kiosk, provider):
                    await agent.stop()
        await kiosk_clinic.aclose()
    during = report.get("during_outage", {})
    chat = report.get("chat", {})
    report["ok"] = bool(
        during.get("kiosk_session_closed") == 0
        and during.get("kiosk_access_denied") == 0
        and during.get("kiosk_state") == "in-progress"
        and chat.get("shown_at_kiosk") == chat.get("sent") == chat.get("shown_at_provider")
        and chat.get("duplicated") == 0
        and report.get("refusal", {}).get("cancel_reason") == "consent-revoked"
    )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--outage", type=float, default=75.0, help="seconds the clinic is away (default 75: past the token)"
    )
    args = parser.parse_args()
    if args.outage < TOKEN_LIFE + 5:
        parser.error(f"--outage: must outlast the token ({TOKEN_LIFE:.0f} s) by at least 5 s")
    os.chdir(ROOT)  # the harness runs as ``python -m tests.support.agent_harness``
    with tempfile.TemporaryDirectory(prefix="clinic-outage-") as work:
        report = asyncio.run(run(args.outage, Path(work)))
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
