"""``telehealth-agent devstack`` as a developer runs it: a real process, real signals, real parts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from tests.support.devstack_cli import (
    Devstack,
    api_address,
    api_status,
    devstack,
    running,
    sourced_agent,
    started_devstacks,
    with_env_file,
    written_settings,
)

pytestmark = pytest.mark.integration

CONSULTATION = "consultation.dr-demo.pat-1"
# The token server grants a patient token only with granted, unexpired consent.
CONSENT = {"patientId": "pat-1", "granted": True, "expiresAt": None}
ONLY_ID_CHARACTERS = "may contain only letters, digits, '_' and '-'"


@pytest.fixture
async def started() -> AsyncIterator[list[Devstack]]:
    """Every devstack a test starts; any still running afterwards is killed."""
    async for processes in started_devstacks():
        yield processes


async def post(settings: dict[str, str], path: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {settings['TELEHEALTH_DEVICE_CREDENTIAL']}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(settings["TELEHEALTH_CLINIC_URL"] + path, json=body) as answer,
    ):
        return answer.status, await answer.json()


async def publish_status(settings: dict[str, str], token: str) -> int:
    """One publish as pat-1 with ``token`` straight to the relay's REST API: its HTTP status."""
    message = quote(json.dumps({"type": "probe"}), safe="")
    url = (
        f"http://{settings['TELEHEALTH_ORIGIN']}/publish/{settings['TELEHEALTH_PUBLISH_KEY']}/"
        f"{settings['TELEHEALTH_SUBSCRIBE_KEY']}/0/{CONSULTATION}/0/{message}"
    )
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, params={"uuid": "pat-1", "auth": token}) as answer,
    ):
        return answer.status


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        (lambda tmp: tmp / "no-such-directory" / "dev.env", "No such file or directory"),
        (lambda tmp: tmp, "is not a regular file"),
    ],
    ids=["missing-directory", "a-directory"],
)
async def test_an_unwritable_env_file_exits_2_naming_it_before_printing_any_secret(
    started: list[Devstack], tmp_path: Path, where: Any, reason: str
) -> None:
    env_file: Path = where(tmp_path)
    process = await devstack(started, "--env-file", str(env_file), "--state-dir", str(tmp_path / "state"))
    code, out, err = await process.finish()
    assert code == 2
    assert out == ""  # no setting, key or credential printed
    (line,) = err.splitlines()
    assert line == f"telehealth-agent: devstack: --env-file {env_file}: cannot be written: {reason}"
    assert not (tmp_path / "state").exists()  # refused before anything was started


async def test_a_state_dir_that_is_a_file_exits_2_naming_it(started: list[Devstack], tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.write_text("not a directory")
    code, out, err = await (await devstack(started, "--state-dir", str(state))).finish()
    assert code == 2
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"telehealth-agent: devstack: --state-dir {state}: cannot be written: ")


async def test_the_default_state_dir_is_fresh_and_removed_at_exit(started: list[Devstack]) -> None:
    process = await running(started)
    line = await process.state_line()
    assert line.endswith("(temporary, removed at exit)\n")
    state = Path(line.removeprefix("# state directory: ").rsplit(" (", 1)[0])
    assert (state / "keys.json").is_file()
    assert (state / "clinic" / "clinic.sqlite3").is_file()
    await process.stop()
    assert not await asyncio.to_thread(state.exists)


async def test_a_state_dir_keeps_keys_and_the_token_ledger_across_a_restart(
    started: list[Devstack], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = await running(started, "--state-dir", str(state))
    assert await first.state_line() == f"# state directory: {state} (kept across restarts)\n"
    kiosk = first.kiosk_settings()
    assert (await post(kiosk, "/api/telemedicine/consent", CONSENT))[0] == 200
    status, grant = await post(
        kiosk, "/api/telemedicine/token", {"userId": "pat-1", "role": "patient", "providerId": "dr-demo"}
    )
    assert status == 200
    await first.stop()

    second = await running(started, "--state-dir", str(state))
    again = second.kiosk_settings()
    # The same keyset and credentials; only the ports are new.
    for name in ("TELEHEALTH_SUBSCRIBE_KEY", "TELEHEALTH_CIPHER_KEY", "TELEHEALTH_DEVICE_CREDENTIAL"):
        assert again[name] == kiosk[name]
    provider = second.provider_settings("dr-demo")
    assert (
        provider["TELEHEALTH_DEVICE_CREDENTIAL"]
        == first.provider_settings("dr-demo")["TELEHEALTH_DEVICE_CREDENTIAL"]
    )

    # The token issued before the restart still works, and revoke-access still finds it.
    assert await publish_status(again, grant["token"]) == 200
    revoke = {"userId": "pat-1", "consultationChannel": CONSULTATION}
    assert await post(provider, "/api/telemedicine/revoke-access", revoke) == (200, {"revoked": 1})
    assert await publish_status(again, grant["token"]) == 403
    await second.stop()


def _written(env_file: Path) -> tuple[list[str], dict[str, int]]:
    """The env file's lines and the mode of every file in its directory."""
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in env_file.parent.iterdir()}
    return env_file.read_text().splitlines(), modes


async def test_the_printout_names_each_staff_department_and_the_auditor(
    started: list[Devstack], tmp_path: Path
) -> None:
    env_file = tmp_path / "dev.env"
    process = await with_env_file(started, env_file)
    # Written whole, owner-only, naming each identity's own file beside it, and nothing else left there.
    lines, modes = await asyncio.to_thread(_written, env_file)
    assert lines == [
        *(f"{k}={v}" for k, v in process.kiosk_settings().items()),
        "# Each agent's own settings: set -a; . FILE; set +a; telehealth-agent run",
        f"# kiosk kiosk-1: {tmp_path / 'dev.kiosk-1.env'}",
        f"# provider dr-demo (department er): {tmp_path / 'dev.dr-demo.env'}",
    ]
    assert modes == {"dev.env": 0o600, "dev.kiosk-1.env": 0o600, "dev.dr-demo.env": 0o600}
    (provider,) = [line for line in process.lines if line.startswith("# provider dr-demo's agent:")]
    assert provider.rstrip().endswith("(departmentId er)")
    (auditor,) = [line for line in process.lines if line.startswith("# auditor ")]
    credential = auditor.rsplit("Bearer ", 1)[1].strip()
    url = process.kiosk_settings()["TELEHEALTH_CLINIC_URL"] + "/api/audit-events"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Authorization": f"Bearer {credential}"}) as answer:
            assert (answer.status, await answer.json()) == (200, {"events": []})
        kiosk_credential = process.kiosk_settings()["TELEHEALTH_DEVICE_CREDENTIAL"]
        async with session.get(url, headers={"Authorization": f"Bearer {kiosk_credential}"}) as answer:
            assert answer.status == 403
    await process.stop()


async def test_a_token_revoked_before_a_restart_stays_refused_after_it(
    started: list[Devstack], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = await running(started, "--state-dir", str(state))
    kiosk = first.kiosk_settings()
    patient = {"userId": "pat-1", "role": "patient", "providerId": "dr-demo"}
    assert (await post(kiosk, "/api/telemedicine/consent", CONSENT))[0] == 200
    status, grant = await post(kiosk, "/api/telemedicine/token", patient)
    assert status == 200
    revoke = {"userId": "pat-1", "consultationChannel": CONSULTATION}
    assert await post(first.provider_settings("dr-demo"), "/api/telemedicine/revoke-access", revoke) == (
        200,
        {"revoked": 1},
    )
    assert await publish_status(kiosk, grant["token"]) == 403
    await first.stop()

    # The relay restarts with the same keys: only its own record of the revocation refuses the token.
    second = await running(started, "--state-dir", str(state))
    assert await publish_status(second.kiosk_settings(), grant["token"]) == 403
    await second.stop()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--provider", "dr x"],
            "--provider 'dr x': user ID: " + ONLY_ID_CHARACTERS + " (found ' ')",
        ),
        (["--nurse", "nu-1:"], "--nurse 'nu-1:': department ID: must not be empty"),
        (
            ["--provider", "dr-a:car.dio"],
            "--provider 'dr-a:car.dio': department ID: " + ONLY_ID_CHARACTERS + " (found '.')",
        ),
        (["--provider", "dr-a", "--nurse", "dr-a:icu"], "--nurse 'dr-a:icu': user ID dr-a is given twice"),
        (["--provider", "kiosk-1"], "--provider 'kiosk-1': user ID kiosk-1 is the check-in kiosk's"),
    ],
    ids=["bad-user-id", "empty-department", "bad-department", "repeated", "the-kiosk"],
)
async def test_a_bad_or_repeated_identity_exits_2_naming_the_option_before_anything(
    started: list[Devstack], tmp_path: Path, args: list[str], line: str
) -> None:
    env_file = tmp_path / "dev.env"
    process = await devstack(started, *args, "--env-file", str(env_file), "--state-dir", str(tmp_path / "s"))
    code, out, err = await process.finish()
    assert (code, out) == (2, "")
    assert err.splitlines() == [f"telehealth-agent: devstack: {line}"]
    assert await asyncio.to_thread(os.listdir, tmp_path) == []  # nothing started, nothing written


async def test_a_provider_given_on_the_command_line_runs_its_agent_from_the_written_settings(
    started: list[Devstack], tmp_path: Path
) -> None:
    env_file = tmp_path / "dev.env"
    process = await with_env_file(
        started, env_file, "--provider", "dr-cardio:cardio", "--nurse", "nu-cardio:cardio"
    )
    own = tmp_path / "dev.dr-cardio.env"
    assert f"# provider dr-cardio (department cardio): {own}" in env_file.read_text()
    settings = written_settings(own)
    assert (settings["TELEHEALTH_ROLE"], settings["TELEHEALTH_DEPARTMENT_ID"]) == ("provider", "cardio")
    # A free port rather than the written 8471: other tests on this machine may hold that one.
    agent = await sourced_agent(own, TELEHEALTH_API_PORT="0")
    try:
        base = await api_address(agent)
        token = await asyncio.to_thread(Path(settings["TELEHEALTH_API_TOKEN_FILE"]).read_text)
        headers = {"Authorization": f"Bearer {token}"}
        # Up: the clinic granted dr-cardio's standing token for its department, the cart connected
        # and caught up (READY came before, with the API: the cart's routes answered 503 till now).
        await agent.wait_line(lambda line: "agent started role=provider" in line)
        status = await api_status(base, token)
        assert (status["role"], status["userId"], status["pubsub"]) == ("provider", "dr-cardio", "connected")
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            session.get(f"{base}/v1/waiting-room") as answer,
        ):
            assert answer.status == 200
    finally:
        agent.send_signal(signal.SIGTERM)
        code, _, err = await agent.finish()
    assert code == 0, err
    await process.stop()
