"""The soak's loop: the development stack in this process, a provider's cart and a kiosk as
``telehealth-agent run`` processes with media (a killed one started again, as systemd would),
``consultations`` consultations back to back with the seeded faults, one record each (handed to
``emit`` as it ends), then both agents stopped with SIGTERM, their audit trails accounted for, and
the summary (``summarize``) judged (``judge``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import aiohttp

from telehealth_client.protocol import channels
from telehealth_devstack.clinic import RateLimit
from telehealth_devstack.stack import DevStack
from tests.support.cli import unset_environment
from tests.support.media import devices_environment
from tests.support.run_agent import RunAgent
from tests.support.soak.consultation import STEP_WITHIN, run_consultation
from tests.support.soak.faults import KINDS, MEDIA_KINDS, Scene, plan
from tests.support.soak.ledger import audit_account, chat_totals
from tests.support.soak.sampling import agent_usage, judged_window, slope

KIOSK = "kiosk-soak"
FLOOD_KIOSK = "kiosk-soak-flood"  # the flood's patients check in with this one's credential
PROVIDER = "dr-soak"
EMERGENCY_SHARE = 0.3  # about this share of consultations escalate an emergency (at least one does)
# Each process's usage is judged after its first consultations (imports, caches, the first call's codecs).
WARM_UP = 2
SERIES = (
    ("kiosk", "agent", "rss_mb"),
    ("kiosk", "agent", "fds"),
    ("kiosk", "agent", "threads"),
    ("kiosk", "media", "rss_mb"),
    ("kiosk", "media", "fds"),
    ("provider", "agent", "rss_mb"),
    ("provider", "agent", "fds"),
    ("provider", "agent", "threads"),
    ("provider", "media", "rss_mb"),
)


def patient_of(index: int) -> str:
    return f"pat-soak-{index}"


async def soak(
    consultations: int,
    seed: int,
    directory: Path,
    emit: Callable[[dict[str, Any]], None],
    only: tuple[str, ...] = KINDS,
) -> dict[str, Any]:
    rng = random.Random(f"{seed}:emergencies")
    emergencies = [rng.random() < EMERGENCY_SHARE for _ in range(consultations)]
    if consultations and not any(emergencies):
        emergencies[rng.randrange(consultations)] = True
    planned = plan(seed, consultations, only)
    records: list[dict[str, Any]] = []
    began = time.monotonic()
    async with (
        DevStack(
            providers=(PROVIDER,),
            kiosks=(KIOSK, FLOOD_KIOSK),
            patient_token_limit=RateLimit(per_minute=100_000, burst=1_000),
        ) as stack,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STEP_WITHIN)) as http,
    ):
        await asyncio.to_thread((directory / "media").mkdir, parents=True, exist_ok=True)
        environments = {
            user_id: {
                **unset_environment(),
                **stack.agent_environment(user_id),
                **await asyncio.to_thread(devices_environment, directory / "media", name),
                "TELEHEALTH_STATE_DIR": str(directory / "state" / user_id),
                "TELEHEALTH_MEDIA": "true",
                "TELEHEALTH_RECONNECT_MAX_SECONDS": "1",
            }
            for user_id, name in ((PROVIDER, "provider"), (KIOSK, "patient"))
        }
        provider = RunAgent(PROVIDER, environments[PROVIDER], directory)
        kiosk = RunAgent(KIOSK, environments[KIOSK], directory)
        restarts = Counter[str]()
        try:
            await provider.start()
            await kiosk.start()

            async def restart_kiosk() -> None:
                restarts["kiosk"] += 1
                await kiosk.start()

            flood_counter = [0]
            for index in range(consultations):
                patient = patient_of(index)
                scene = Scene(
                    stack,
                    kiosk,
                    provider,
                    PROVIDER,
                    patient,
                    channels.consultation(PROVIDER, patient),
                    http,
                    restart_kiosk,
                    flood_counter,
                    lambda: _usage(kiosk, provider),
                )
                start_usage = await _usage(kiosk, provider)
                record = await run_consultation(scene, index, planned[index], emergencies[index])
                row = asdict(record)
                if not record.completed:
                    row["logs"] = {a.user_id: _tail(a) for a in (kiosk, provider)}  # the agents log no PHI
                    await _tidy(scene)
                row["planned"] = [p.kind for p in planned[index]]
                row["usage"] = {"start": start_usage, "end": await _usage(kiosk, provider)}
                records.append(row)
                emit(row)
        finally:
            _lift_faults(stack)
            stops = {}
            for agent in (kiosk, provider):
                if agent.running:
                    seconds, code = await agent.stop()
                    stops[agent.user_id] = {"seconds": round(seconds, 2), "exit_code": code}
        audit = {
            "kiosk": await audit_account(stack, KIOSK, environments[KIOSK]),
            "provider": await audit_account(stack, PROVIDER, environments[PROVIDER]),
        }
    summary = summarize(records, audit)
    summary.update(
        seed=seed,
        planned=[[p.kind for p in each] for each in planned],
        restarts=dict(restarts),
        stops=stops,
        seconds=round(time.monotonic() - began, 1),
        load_average=[round(x, 2) for x in os.getloadavg()],
    )
    return summary


def _tail(agent: RunAgent, lines: int = 40) -> list[str]:
    if agent.process is None:
        return []
    return [line.rstrip() for line in agent.process.written().decode(errors="replace").splitlines()[-lines:]]


async def _usage(kiosk: RunAgent, provider: RunAgent) -> dict[str, Any]:
    return {
        "kiosk": await asyncio.to_thread(agent_usage, kiosk.pid) if kiosk.running else None,
        "provider": await asyncio.to_thread(agent_usage, provider.pid) if provider.running else None,
    }


def _lift_faults(stack: DevStack) -> None:
    stack.relay.resume()
    stack.relay.set_delay(0.0)
    stack.relay.fail_next(0, 503)
    if stack.turn.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stack.turn.pid, signal.SIGCONT)


async def _tidy(scene: Scene) -> None:
    """After a failed consultation: faults lifted, a dead kiosk started again, the consultation
    ended on both sides (whatever of it is left), so the next one starts from idle."""
    _lift_faults(scene.stack)
    if not scene.kiosk.running:
        await scene.restart_kiosk()
    one = f"/v1/consultations/{scene.consultation_id}"
    for path, body in ((f"{one}/end-call", None), (f"{one}/end", {"followUpRequired": False})):
        with contextlib.suppress(Exception):
            await scene.provider.call(scene.http, "POST", path, body)
    with contextlib.suppress(Exception):
        await scene.kiosk.call(scene.http, "POST", "/v1/leave")
    with contextlib.suppress(Exception):
        await scene.kiosk.until(scene.http, lambda s: s["status"] == "idle", "was idle", STEP_WITHIN)


def _series(records: list[dict[str, Any]], side: str, part: str, key: str) -> list[tuple[int, float]]:
    """One usage series, (process, value) per consultation that got that far: the agent's at its
    end, its media children's late in its call (children are per call: one series for all the
    calls that no media fault made rebuild)."""
    values = []
    for record in records:
        if part == "media" and any(f["kind"] in MEDIA_KINDS for f in record["faults"]):
            continue  # its call was rebuilt in a fresh child: younger, so smaller; not comparable
        sample = (record["in_call"] or {}).get(side) if part == "media" else record["usage"]["end"][side]
        if sample is not None:
            pid = 0 if part == "media" else int(sample["agent"]["pid"])
            values.append((pid, float(sample[part][key])))
    return values


def summarize(records: list[dict[str, Any]], audit: dict[str, Any]) -> dict[str, Any]:
    faults = [f for r in records for f in r["faults"]]
    recovery: dict[str, Any] = {}
    for kind in sorted(MEDIA_KINDS):
        times = [f["recovery_s"] for f in faults if f["kind"] == kind and "recovery_s" in f]
        if times:
            recovery[kind] = {
                "p50_s": round(statistics.median(times), 2),
                "max_s": max(times),
                "samples": len(times),
                "dipped": sum(1 for f in faults if f["kind"] == kind and f.get("dipped")),
            }
    growth: dict[str, Any] = {}
    for side, part, key in SERIES:
        series = _series(records, side, part, key)
        warm = judged_window(series, WARM_UP)
        fitted = slope(warm)
        growth[f"{side}.{part}.{key}"] = {
            "series": [value for _, value in series],
            "judged": len(warm),
            "after_warm_up": {"min": min(warm), "max": max(warm)} if warm else None,
            "per_consultation": None if fitted is None else round(fitted, 3),
        }
    return {
        "summary": True,
        "consultations": len(records),
        "completed": sum(1 for r in records if r["completed"]),
        "failed": [
            {"index": r["index"], "step": r["step"], "error": r["error"]}
            for r in records
            if not r["completed"]
        ],
        "emergencies": sum(1 for r in records if r["emergency"] and r["completed"]),
        "faults_by_kind": {kind: sum(1 for f in faults if f["kind"] == kind) for kind in KINDS},
        "orphaned_media_children": sum(f.get("orphans", 0) for f in faults),
        "chat": chat_totals(records),
        "audit": audit,
        "recovery": recovery,
        "growth": growth,
    }


# What judge() allows after warm-up: generous on a shared 2-core machine (the long run judges the slope).
# Media children are new in every call: their RSS differs from call to call by what the codecs hold.
BOUNDS = {"rss_mb": 40.0, "fds": 16.0, "threads": 8.0}
MEDIA_RSS_BOUND = 60.0


def judge(summary: dict[str, Any]) -> list[str]:
    """What is wrong with a run (empty: nothing): a consultation not completed, a chat message or
    an audit event lost or duplicated, a forged message shown, a chain that does not verify, a
    fault kind never injected, an orphaned media child, usage growing past ``BOUNDS`` after warm-up."""
    problems = [f"consultation {f['index']} failed at {f['step']}: {f['error']}" for f in summary["failed"]]
    chat = summary["chat"]
    for key in ("lost", "duplicated", "forged_shown", "foreign_shown"):
        if chat[key]:
            problems.append(f"chat: {chat[key]} {key}")
    if chat.get("in_history", 0) != chat.get("sent", 0):
        problems.append(f"chat: {chat['sent'] - chat['in_history']} sent never in PubNub's history")
    for side, account in summary["audit"].items():
        for key in ("lost", "duplicated"):
            if account[key]:
                problems.append(f"audit ({side}): {account[key]} {key}")
        if not account["chain_verified"]:
            problems.append(f"audit ({side}): the chain does not verify: {account['verify']}")
    planned = {kind for row in summary.get("planned", []) for kind in row}
    problems += [
        f"fault {k} planned, never injected" for k in sorted(planned) if not summary["faults_by_kind"][k]
    ]
    if summary["orphaned_media_children"]:
        problems.append(f"{summary['orphaned_media_children']} media children outlived their killed agent")
    for name, grown in summary["growth"].items():
        bound = MEDIA_RSS_BOUND if name.endswith("media.rss_mb") else BOUNDS.get(name.rsplit(".", 1)[1])
        window = grown["after_warm_up"]
        if bound is not None and window is not None and window["max"] - window["min"] > bound:
            problems.append(f"{name} grew {window['max'] - window['min']:.1f} after warm-up (bound {bound})")
    return problems
