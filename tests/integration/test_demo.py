"""``telehealth-agent demo`` as a newcomer runs it: a real process, the real stack inside it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from pathlib import Path

import aiohttp
import pytest

from telehealth_devstack.demo.steps import SAMPLE_PHI
from tests.support.cli import AGENT, Process, unset_environment
from tests.support.devstack_cli import api_status

pytestmark = pytest.mark.integration

WITHIN = 60.0  # the whole demo takes about a second; this only stops a hung one

# Each step, in order, with what each agent must have said it saw.
EXPECTED: list[tuple[str, list[str]]] = [
    ("stack", ["stack: relay 127.0.0.1:"]),
    (
        "agents",
        [
            "provider: dr-demo connected, standing token",
            "specialist: dr-specialist connected, standing token",
            "patient: kiosk-demo idle (no token, no subscription)",
        ],
    ),
    ("consent", ["clinic: telehealth consent of pat-demo granted"]),
    ("check-in", ["patient: checked-in", "provider: patient pat-demo in queue (position 1)"]),
    ("queue update 1", ["patient: position 1, ~0 min wait", "provider: sent position 1"]),
    ("queue update 2", ["patient: position 1, ~0 min wait", "provider: sent position 1"]),
    ("join", ["patient: connecting", "provider: connecting"]),
    (
        "call",
        [
            "patient: video flowing",
            "patient: audio flowing",
            "provider: video flowing",
            "provider: audio flowing",
            "patient: in-progress",
            "provider: in-progress",
            "patient: received {n} video and {n} audio frames",
            "provider: received {n} video and {n} audio frames",
            "provider: offer to media both ways in {n} ms, relay-only",
            "patient: quality {n}/5, {n} fps {n}x{n}, round trip {n} ms",
            "provider: quality {n}/5, {n} fps {n}x{n}, round trip {n} ms",
        ],
    ),
    ("patient asks", ["patient: message {id} sent ({n} chars)", "provider: message {id} from pat-demo"]),
    ("provider answers", ["provider: message {id} sent ({n} chars)", "patient: message {id} from dr-demo"]),
    ("read receipts", ["provider: pat-demo read up to {id}", "patient: dr-demo read up to {id}"]),
    (
        "emergency",
        [
            # Both providers are on call; the one escalating is not notified (it knows).
            "provider: escalation {id} critical, delivered, 1 on-call notified",
            "specialist: on-call alert {id} (critical)",
        ],
    ),
    ("emergency resolved", ["provider: escalation {id} resolved", "specialist: escalation {id} resolved"]),
    (
        "invite specialist",
        [
            "specialist: invited by dr-demo as specialist",
            "patient: dr-specialist invited as specialist",
            "provider: dr-specialist invited as specialist",
        ],
    ),
    (
        "specialist joins",
        [
            "specialist: joined, consultation in-progress",
            "patient: dr-specialist joined as specialist",
            "provider: dr-specialist joined as specialist",
        ],
    ),
    (
        "remove specialist",
        [
            "patient: dr-specialist removed as specialist",
            "provider: dr-specialist removed as specialist, 1 token(s) revoked",
            "specialist: left the consultation (removed)",
        ],
    ),
    ("revoked token", ["specialist: PROVIDER_JOINED with its consultation token refused (HTTP 403)"]),
    ("wrap-up", ["patient: wrapping-up", "provider: wrapping-up"]),
    (
        "end",
        [
            "patient: completed, 1 min, follow-up required",
            "provider: completed",
            "patient: kiosk-demo idle again",
        ],
    ),
    (
        "audit",
        [
            "patient: chain of {n} intact, {n} at the sink",
            "provider: chain of {n} intact, {n} at the sink",
            "specialist: chain of {n} intact, {n} at the sink",
            "clinic: {n} audit events at the sink, each once",
        ],
    ),
]
# The only warnings of a demo that goes as planned: its emergency, escalated and alerted.
EXPECTED_WARNINGS = ('msg="emergency escalated id=', 'msg="emergency alert received escalation=')
# In a fragment, {id} stands for a message's or an escalation's short id, {n} for a number.
PLACEHOLDERS = {re.escape("{id}"): "([0-9a-f]{8})", re.escape("{n}"): "([0-9]+)"}
STEP_LINE = re.compile(r"^  \+(?P<elapsed>\d+\.\d{3})s  (?P<name>.{20})(?P<seen>.*)$")

# What must never be printed: the development keyset's keys and credentials, Access Manager
# tokens and the cipher key (random per run, so caught by shape: long opaque strings).
SECRET_PREFIXES = ("sec-c-", "pub-c-", "sub-c-", "dev-kiosk-", "dev-provider-", "dev-auditor-")
OPAQUE = re.compile(r"[A-Za-z0-9_+/=-]{32,}")
# Message, escalation and audit event IDs (UUIDs) are long too, but they are IDs, not secrets.
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


async def demo(*args: str, path: str | None = None) -> tuple[int, str, str]:
    env = unset_environment()
    if path is not None:
        env["PATH"] = path
    return await (await Process.spawn(*AGENT, "demo", *args, env=env)).finish(WITHIN)


def step_lines(out: str) -> list[tuple[float, str, str]]:
    found = []
    for line in out.splitlines():
        if (match := STEP_LINE.match(line)) is not None:
            found.append((float(match["elapsed"]), match["name"].strip(), match["seen"]))
    return found


def fragment_pattern(fragment: str) -> re.Pattern[str]:
    pattern = re.escape(fragment)
    for placeholder, group in PLACEHOLDERS.items():
        pattern = pattern.replace(placeholder, group)
    return re.compile(pattern)


def seen_values(steps: list[tuple[float, str, str]]) -> dict[str, list[tuple[str, ...]]]:
    """Each step's fragments, in order, with the values found for their placeholders."""
    values: dict[str, list[tuple[str, ...]]] = {}
    for (_, name, seen), (_, expected) in zip(steps, EXPECTED, strict=True):
        found = []
        for fragment in expected:
            match = fragment_pattern(fragment).search(seen)
            assert match is not None, f"step {name}: {fragment!r} not in {seen!r}"
            found.append(match.groups())
        values[name] = found
    return values


def assert_chat_emergency_and_audit_agree(values: dict[str, list[tuple[str, ...]]]) -> None:
    """Both sides name the same message and escalation; receipts name the other's message; each
    agent's chain is wholly at the sink and the sink holds nothing else."""
    [(question, _), (question_seen,)] = values["patient asks"]
    [(answer, _), (answer_seen,)] = values["provider answers"]
    assert question == question_seen and answer == answer_seen and question != answer
    assert values["read receipts"] == [(answer,), (question,)]
    [(escalation,), (alert,)] = values["emergency"]
    assert escalation == alert
    assert values["emergency resolved"] == [(escalation,), (escalation,)]
    *chains, (total,) = values["audit"]
    assert all(int(chain) == int(at_sink) > 0 for chain, at_sink in chains)
    assert sum(int(chain) for chain, _ in chains) == int(total)


def assert_no_secret(text: str) -> None:
    for prefix in SECRET_PREFIXES:
        assert prefix not in text
    assert OPAQUE.findall(UUID.sub("<uuid>", text)) == []


async def test_demo_runs_the_consultation_step_by_step_with_who_saw_each_step() -> None:
    code, out, err = await demo()
    assert code == 0, out + err
    steps = step_lines(out)
    assert [name for _, name, _ in steps] == [name for name, _ in EXPECTED]
    assert_chat_emergency_and_audit_agree(seen_values(steps))
    elapsed = [at for at, _, _ in steps]
    assert elapsed == sorted(elapsed)
    assert out.splitlines()[-1].startswith(f"demo passed: {len(EXPECTED)} steps in ")
    assert_no_secret(out + err)
    # A consultation that goes as planned warns about nothing but its emergency (the escalation,
    # and the on-call specialist's alert): the removed specialist's revoked token is expected,
    # not a refresh to attempt and complain about.
    warnings = [line for line in (out + err).splitlines() if "level=warning" in line or "level=error" in line]
    assert [line for line in warnings if not any(expected in line for expected in EXPECTED_WARNINGS)] == []
    assert len(warnings) == len(EXPECTED_WARNINGS)


async def test_json_lines_with_the_agents_logs_hold_every_step_and_no_secret() -> None:
    code, out, err = await demo("--json", "--verbose")
    assert code == 0, out + err
    records = [json.loads(line) for line in out.splitlines()]  # stdout is JSON lines only
    *steps, result = records
    assert [record["step"] for record in steps] == [name for name, _ in EXPECTED]
    assert all(record["ok"] is True and record["seen"] for record in steps)
    check_in = next(record for record in steps if record["step"] == "check-in")
    assert ["patient", "checked-in"] in check_in["seen"]
    assert result["result"] == "passed" and result["steps"] == len(EXPECTED)
    assert "level=info" in err  # --verbose: the agents' logs, on stderr
    assert_no_secret(out + err)
    # The chat texts, the escalation's reason and its resolution: in no step and no log line.
    assert len(SAMPLE_PHI) == 4
    for text in SAMPLE_PHI:
        assert text not in out + err


async def test_a_failed_step_is_named_and_exits_1() -> None:
    # --skip-consent records no consent: the clinic refuses the patient's token at check-in.
    code, out, err = await demo("--skip-consent")
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "telehealth-agent: demo: step check-in failed: check-in refused: consent: missing"
    )
    steps = step_lines(out)
    assert [name for _, name, _ in steps] == ["stack", "agents", "consent", "check-in"]
    assert steps[-1][2] == "FAILED: check-in refused: consent: missing"
    assert "demo passed" not in out
    assert_no_secret(out + err)


async def test_without_coturn_the_stack_step_fails_saying_how_to_install_it(tmp_path: Path) -> None:
    # A PATH without coturn's turnserver: what a clone without the system packages sees.
    code, out, err = await demo(path=str(tmp_path))
    assert code == 1
    reason = "coturn's 'turnserver' was not found on PATH; run scripts/install-system-deps.sh"
    assert err.strip().splitlines()[-1] == f"telehealth-agent: demo: step stack failed: {reason}"
    assert [name for _, name, _ in step_lines(out)] == ["stack"]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "soon", "301"])
async def test_a_bad_step_timeout_is_a_usage_error_naming_the_option(value: str) -> None:
    code, out, err = await demo("--step-timeout", value)
    assert code == 2
    assert "argument --step-timeout: must be" in err
    assert out == ""


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc/*/stat: field 4 is the parent's pid)."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[-1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_sigterm_mid_demo_stops_everything_it_started_and_exits_1() -> None:
    process = await Process.spawn(*AGENT, "demo", env=unset_environment())
    try:
        # The stack step's line: coturn (a child process) is running from here on.
        await process.wait_line(lambda line: bool(step_lines(line)), WITHIN)
        started = children(process.process.pid)
        assert started, "coturn should be a child of the demo"
        process.send_signal(signal.SIGTERM)
        _, _, err = await process.finish(WITHIN)
    finally:
        await process.kill()  # if it is still running
    assert process.process.returncode == 1
    assert "telehealth-agent: demo: stopped by SIGTERM" in err
    assert [child for child in started if alive(child)] == []


async def test_keep_running_leaves_the_stack_and_a_kiosk_api_up_until_sigterm(tmp_path: Path) -> None:
    # Every temporary file of the demo (its state, coturn's options) goes under tmp_path: all gone at exit.
    env = {**unset_environment(), "TMPDIR": str(tmp_path)}
    process = await Process.spawn(*AGENT, "demo", "--keep-running", env=env)
    try:
        await process.next_line("demo passed: ", within=WITHIN)
        url = (await process.next_line("technician page: ", within=WITHIN)).split()[-1]
        token = (await process.next_line("API token")).split()[-1]
        console = (await process.next_line("provider console: ")).split()[-1]
        await process.next_line("stop: Ctrl-C")
        status = await api_status(url.rstrip("/"), token)
        assert (status["role"], status["userId"], status["status"]) == ("patient", "kiosk-demo", "idle")
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}v1/health") as answer:
                assert (answer.status, (await answer.json())["ok"]) == (200, True)
            async with session.get(f"{url}v1/status") as answer:
                assert answer.status == 401
            async with session.get(url) as answer:
                assert answer.status == 200 and "text/html" in answer.headers["Content-Type"]
            async with session.get(console) as answer:
                assert answer.status == 200 and "Provider console" in await answer.text()
        process.send_signal(signal.SIGTERM)
        code, _, err = await process.finish(WITHIN)
    finally:
        await process.kill()
    assert code == 0, err
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"{url}v1/health")  # the kiosk agent stopped with it
    assert await asyncio.to_thread(os.listdir, tmp_path) == []
