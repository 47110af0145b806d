"""``telehealth-agent doctor`` as a process against the real development stack: a kiosk set up as the
installer sets one up (a settings file, a root-only credentials directory), its agent running
(``telehealth-agent run``) on a generated camera and an ALSA file microphone, every check passing;
then each failure named with its fix (a placeholder credential, a device credential the clinic
refuses, the relay down, no agent answering), and a root scripts/install-kiosk.sh just installed
into, whose placeholders the doctor names. Never a secret in what it prints."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devices import synthetic
from telehealth_client.doctor.origin import handshake
from telehealth_devstack.stack import DEFAULT_DEPARTMENT, DevStack
from telehealth_devstack.turn import TurnServer
from tests.support.cli import AGENT, Process, unset_environment
from tests.support.consultation import KIOSK
from tests.support.service import CREDENTIALS, INSTALLED_UNIT, SETTINGS, UNIT, Installed

pytestmark = pytest.mark.integration

WITHIN = 120.0  # the whole doctor: devices, a TURN allocation, on a loaded machine
CHECKS = (
    "settings",
    "credentials",
    "pubnub",
    "clinic",
    "turn",
    "camera",
    "microphone",
    "local-api",
    "clock",
    "disk",
    "unit",
)
WITHOUT_DEVICES = ("--skip", "devices")
PLACEHOLDER = (
    "FILL-IN: replace this whole file with this kiosk's device credential for the clinic backend, on "
    "one line.\n(Until then the agent refuses to start.)\n"
)


@dataclass
class Kiosk:
    """A kiosk's settings file and credentials directory on the development stack."""

    directory: Path
    secrets: dict[str, str]
    environment: dict[str, str] = field(default_factory=dict)  # beyond the settings (ALSA's)

    @property
    def config(self) -> Path:
        return self.directory / "agent.toml"

    @property
    def credentials(self) -> Path:
        return self.directory / "credentials"

    @property
    def api_socket(self) -> Path:
        return self.directory / "api.sock"

    def put_secret(self, name: str, text: str) -> None:
        path = self.credentials / name
        path.write_text(text)
        path.chmod(0o600)

    def set(self, **settings: str | int | bool | None) -> None:
        """These settings in the file, each in place of the one it had (None: left out)."""
        lines = [
            line for line in self.config.read_text().splitlines() if line.split(" = ")[0] not in settings
        ]
        lines += [f"{key} = {_toml(value)}" for key, value in settings.items() if value is not None]
        self.config.write_text("\n".join(lines) + "\n")


def _toml(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value) if isinstance(value, int) else f'"{value}"'


def kiosk_on(stack: DevStack, directory: Path) -> Kiosk:
    environment = stack.agent_environment(KIOSK)
    secrets = {
        "publish_key": environment["TELEHEALTH_PUBLISH_KEY"],
        "subscribe_key": environment["TELEHEALTH_SUBSCRIBE_KEY"],
        "cipher_key": environment["TELEHEALTH_CIPHER_KEY"],
        "device_credential": environment["TELEHEALTH_DEVICE_CREDENTIAL"],
        "api_token": environment["TELEHEALTH_API_TOKEN"],
    }
    kiosk = Kiosk(directory, secrets)
    kiosk.credentials.mkdir(mode=0o700)
    for name, value in secrets.items():
        kiosk.put_secret(name, f"{value}\n")
    kiosk.config.write_text("")
    kiosk.set(
        role="patient",
        user_id=KIOSK,
        organization_id=environment["TELEHEALTH_ORGANIZATION_ID"],
        department_id=DEFAULT_DEPARTMENT,
        clinic_url=environment["TELEHEALTH_CLINIC_URL"],
        origin=environment["TELEHEALTH_ORIGIN"],
        ssl=False,
        media=False,
        api_socket=str(kiosk.api_socket),
        state_dir=str(directory / "state"),
    )
    return kiosk


def with_devices(kiosk: Kiosk) -> Kiosk:
    """The generated camera (a video file) and an ALSA file microphone playing a tone."""
    video = synthetic.write_video(kiosk.directory / "camera.mkv", "normal", frames=40)
    tone = synthetic.write_pcm(kiosk.directory / "tone.raw", "tone")
    alsa = synthetic.write_alsa_config(kiosk.directory / "alsa", tone)
    assert alsa.microphone is not None
    kiosk.set(camera=str(video), microphone=alsa.microphone)
    kiosk.environment.update(alsa.env)
    return kiosk


@pytest.fixture
def kiosk(stack: DevStack, tmp_path: Path) -> Kiosk:
    return kiosk_on(stack, tmp_path)


async def doctor(kiosk: Kiosk, *arguments: str) -> tuple[int, str, str]:
    process = await Process.spawn(
        *AGENT,
        "doctor",
        "--config",
        str(kiosk.config),
        "--credentials",
        str(kiosk.credentials),
        "--unit",
        str(UNIT),
        *arguments,
        env={**unset_environment(), **kiosk.environment},
    )
    return await process.finish(WITHIN)


@pytest.fixture
async def running_agent(kiosk: Kiosk) -> AsyncIterator[Process]:
    """``telehealth-agent run`` on the kiosk's settings and credentials (as systemd would hand them),
    once its local API listens; stopped with SIGTERM at the end."""
    environment = {**unset_environment(), "CREDENTIALS_DIRECTORY": str(kiosk.credentials)}
    agent = await Process.spawn(*AGENT, "run", "--config", str(kiosk.config), env=environment)
    try:
        await agent.next_line("local api listening address=", within=60.0)
        yield agent
    finally:
        if agent.process.returncode is None:
            agent.send_signal(signal.SIGTERM)
        await agent.finish(60.0)


def by_check(out: str) -> dict[str, str]:
    """Each check's line (with its detail lines) by the check's name."""
    found: dict[str, str] = {}
    name = None
    for line in out.splitlines():
        if line.startswith(("PASS ", "WARN ", "FAIL ", "SKIP ")):
            name = line.split()[1]
            found[name] = line
        elif name is not None and line.startswith(" "):
            found[name] += "\n" + line
    return found


def assert_no_secret(kiosk: Kiosk, text: str) -> None:
    for value in kiosk.secrets.values():
        assert value[: len(value) // 3] not in text


@pytest.mark.usefixtures("running_agent")
async def test_every_check_passes_on_the_development_stack(kiosk: Kiosk) -> None:
    with_devices(kiosk)

    code, out, err = await doctor(kiosk)
    assert code == 0, out + err
    lines = by_check(out)
    assert list(lines) == list(CHECKS), out
    for name in CHECKS:
        if name != "pubnub":
            assert lines[name].startswith("PASS "), out
    # The relay speaks plain HTTP: passing, with the word that a kiosk must not.
    assert lines["pubnub"].startswith("WARN "), out
    assert "ssl = false is a development setting" in lines["pubnub"]
    assert f"{kiosk.config}: complete (patient {KIOSK}" in lines["settings"]
    assert "5 secrets present, each readable only by its owner" in lines["credentials"]
    assert f"accepted this device's credential as {KIOSK}" in lines["clinic"]
    assert "an allocation on 127.0.0.1:" in lines["turn"]
    assert f"unix:{kiosk.api_socket}: the agent answers as patient {KIOSK}" in lines["local-api"]
    assert "exposure 1.3" in lines["unit"]
    assert out.splitlines()[-1].startswith("doctor: PASS (10 passed, 1 with a warning)")
    assert_no_secret(kiosk, out + err)


async def test_a_placeholder_credential_is_named_with_the_file_to_put_it_in(kiosk: Kiosk) -> None:
    kiosk.put_secret("device_credential", PLACEHOLDER)

    code, out, err = await doctor(kiosk, *WITHOUT_DEVICES)

    assert code == 1, err
    lines = by_check(out)
    assert lines["settings"].startswith("PASS ")
    assert lines["credentials"].startswith("FAIL  credentials  1 problem")
    assert (
        "device_credential: still the installer's placeholder: put this device's credential for the "
        f"clinic backend in {kiosk.credentials / 'device_credential'}, on one line"
    ) in lines["credentials"]
    for name in ("pubnub", "clinic", "turn", "local-api"):
        assert lines[name] == f"SKIP  {name:<11}  not run: the credentials are not usable (see credentials)"
    assert lines["clock"].startswith("PASS ")  # it needs no credential
    assert out.splitlines()[-1].startswith("doctor: FAIL")
    assert_no_secret(kiosk, out + err)


async def test_a_credential_the_clinic_refuses_is_named(kiosk: Kiosk) -> None:
    kiosk.put_secret("device_credential", "dev-kiosk-not-one-the-clinic-issued\n")

    code, out, err = await doctor(kiosk, *WITHOUT_DEVICES, "--skip", "local-api")

    assert code == 1, err
    lines = by_check(out)
    assert lines["credentials"].startswith("PASS ")  # a usable file: only the clinic can tell
    assert lines["pubnub"].startswith("WARN ")
    assert lines["clinic"] == (
        "FAIL  clinic       the clinic refused the device credential (HTTP 401): put the credential "
        f"the clinic issued for {KIOSK} in {kiosk.credentials / 'device_credential'}"
    )
    assert lines["turn"].startswith("FAIL  turn         no TURN credentials: ")
    assert lines["local-api"] == "SKIP  local-api    left out (--skip)"
    assert "dev-kiosk-not-one" not in out + err
    assert_no_secret(kiosk, out + err)


async def test_a_credential_of_another_device_is_refused_for_this_user_id(
    stack: DevStack, kiosk: Kiosk
) -> None:
    provider = stack.agent_environment(next(iter(stack.users)))
    kiosk.put_secret("device_credential", provider["TELEHEALTH_DEVICE_CREDENTIAL"])

    code, out, _ = await doctor(kiosk, *WITHOUT_DEVICES, "--skip", "local-api")

    assert code == 1
    clinic = by_check(out)["clinic"]
    assert clinic.startswith(
        f"FAIL  clinic       the clinic refused the device credential for user_id {KIOSK}"
    )
    assert "and user_id must be the same device's" in clinic
    assert provider["TELEHEALTH_DEVICE_CREDENTIAL"][:12] not in out


async def test_the_relay_down_is_named_with_its_address(stack: DevStack, kiosk: Kiosk) -> None:
    await stack.relay.stop()

    code, out, err = await doctor(kiosk, *WITHOUT_DEVICES, "--skip", "local-api")

    assert code == 1, err
    lines = by_check(out)
    assert lines["pubnub"] == (
        f"FAIL  pubnub       cannot connect to {stack.relay.origin} (Connection refused): check origin "
        f"and that the firewall lets TCP port {stack.relay.port} out"
    )
    # The rest does not need PubNub.
    assert lines["clinic"].startswith("PASS ") and lines["turn"].startswith("PASS ")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound but not listening: a connection there is refused, and no one else gets it."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


async def test_no_agent_answering_says_to_look_at_the_service(kiosk: Kiosk, closed_port: int) -> None:
    kiosk.set(api_socket=None, api_port=closed_port)  # a TCP port, where nothing listens

    code, out, err = await doctor(kiosk, *WITHOUT_DEVICES)

    assert code == 1, err
    lines = by_check(out)
    assert lines["local-api"] == (
        f"FAIL  local-api    nothing answers at http://127.0.0.1:{closed_port} (ClientConnectorError): "
        "is the agent running? systemctl status kiosk.service (journalctl -u kiosk.service says why not)"
    )
    assert [name for name, line in lines.items() if line.startswith("FAIL")] == ["local-api"]


async def test_json_is_the_report_alone(kiosk: Kiosk) -> None:
    kiosk.put_secret("device_credential", PLACEHOLDER)

    code, out, err = await doctor(kiosk, *WITHOUT_DEVICES, "--json")

    assert code == 1, err
    report = json.loads(out)
    assert report["passed"] is False
    checks = {check["name"]: check for check in report["checks"]}
    assert list(checks) == list(CHECKS)
    assert checks["credentials"]["status"] == "fail"
    assert checks["camera"] == {
        "name": "camera",
        "status": "skip",
        "summary": "left out (--skip)",
        "details": [],
        "asked": True,
    }
    assert_no_secret(kiosk, out + err)


def test_on_a_fresh_install_it_names_what_is_left_to_fill_in(installed: Installed, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed.root, root, symlinks=True)
    result = subprocess.run(
        [
            *AGENT,
            "doctor",
            "--config",
            str(root / SETTINGS),
            "--credentials",
            str(root / CREDENTIALS),
            "--unit",
            str(root / INSTALLED_UNIT),
            *WITHOUT_DEVICES,
        ],
        capture_output=True,
        text=True,
        env=unset_environment(),
        timeout=WITHIN,
    )

    assert result.returncode == 1, result.stderr
    lines = by_check(result.stdout)
    settings, credentials = lines["settings"], lines["credentials"]
    assert settings.startswith(f"FAIL  settings     {root / SETTINGS}: 3 settings left to fill in")
    for key, value in (
        ("user_id", "kiosk-unconfigured"),
        ("organization_id", "org-unconfigured"),
        ("clinic_url", "https://clinic.example.invalid"),
    ):
        assert f"- {key}: still the placeholder '{value}': set {key} in {root / SETTINGS}" in settings
    assert "department_id" not in settings  # a kiosk's comes with each check-in: run needs none
    assert credentials.startswith(f"FAIL  credentials  4 problems ({root / CREDENTIALS})")
    for name in ("publish_key", "subscribe_key", "cipher_key", "device_credential"):
        assert f"- {name}: still the installer's placeholder: put " in credentials
        assert f" in {root / CREDENTIALS / name}, on one line" in credentials
    assert "api_token" not in credentials  # the installer generated a usable one
    assert (root / CREDENTIALS / "api_token").read_text()[:20] not in result.stdout + result.stderr
    for name in ("pubnub", "clinic", "turn", "local-api", "clock"):
        assert lines[name].startswith(f"SKIP  {name:<11}  not run: the settings are not complete"), name
    assert lines["unit"] == f"PASS  unit         {root / INSTALLED_UNIT}: exposure 1.3 (at most 2)"
    assert lines["disk"].startswith("PASS ")


async def test_checks_left_out_on_request_do_not_fail_it(kiosk: Kiosk) -> None:
    skipped = [argument for name in CHECKS[2:] for argument in ("--skip", name)]
    code, out, _ = await doctor(kiosk, *skipped)
    assert code == 0, out
    assert [line.split()[0] for line in by_check(out).values()] == ["PASS", "PASS"] + ["SKIP"] * 9
    assert out.splitlines()[-1] == "doctor: PASS (2 passed, 9 not run)"


def test_a_drop_in_that_weakens_the_unit_fails_it(installed: Installed, tmp_path: Path) -> None:
    root = tmp_path / "root"
    shutil.copytree(installed.root, root, symlinks=True)
    drop_in = root / INSTALLED_UNIT.parent / f"{INSTALLED_UNIT.name}.d" / "weaker.conf"
    drop_in.parent.mkdir()
    drop_in.write_text(
        "[Service]\nProtectSystem=no\nProtectHome=no\nPrivateUsers=no\nNoNewPrivileges=no\n"
        "CapabilityBoundingSet=CAP_SYS_ADMIN\n"
    )
    skip = [argument for name in CHECKS[2:-1] for argument in ("--skip", name)]
    result = subprocess.run(
        [*AGENT, "doctor", "--config", str(root / SETTINGS), "--unit", str(root / INSTALLED_UNIT), *skip],
        capture_output=True,
        text=True,
        env=unset_environment(),
        timeout=WITHIN,
    )
    assert result.returncode == 1
    assert by_check(result.stdout)["unit"].startswith(
        f"FAIL  unit         {root / INSTALLED_UNIT}: exposure 2.3, over 2: its sandboxing was weakened"
    )


async def test_the_origins_tls_certificate_is_verified() -> None:
    """Against a real TLS listener (coturn's, with a throwaway CA): refused until its CA is trusted."""
    async with TurnServer(tls=True) as server:
        port = server.tls_port
        untrusted = await handshake("127.0.0.1", port, ssl.create_default_context(), 10.0)
        assert untrusted is not None
        assert untrusted.startswith(f"the TLS certificate of 127.0.0.1:{port} is not trusted (")
        assert untrusted.endswith(
            "a proxy that inspects TLS needs its CA in ca_bundle; otherwise check origin"
        )
        trusted = ssl.create_default_context(cafile=str(server.ca_file))
        assert await handshake("127.0.0.1", port, trusted, 10.0) is None
