"""What the agent process loads. It never loads aiortc or PyAV: they belong in the media child
(native memory, import time). And what ``telehealth-agent run`` imports to start (the command
line, the agent, its settings and its API) loads nothing that only a device check (numpy,
OpenCV, PortAudio), a call (the call's modules), a sealed record (cryptography) or a bus in use
(the PubNub SDK's client and crypto: an idle kiosk subscribes to nothing) needs: those load on
first use, which keeps an idle kiosk's memory and its start small (issue 24's targets;
tests/integration/service/test_idle_footprint.py checks the running process)."""

import subprocess
import sys

# What ``telehealth-agent run`` imports before its event loop starts (telehealth_client/cli.py).
RUN_IMPORTS = (
    "import telehealth_client.cli\n"
    "telehealth_client.cli.build_parser()\n"
    "import telehealth_client.agent, telehealth_client.config, telehealth_client.settings_check\n"
    "import telehealth_client.api.app\n"
)
NOT_AT_START = (
    "numpy",
    "cv2",
    "av",
    "aiortc",
    "aioice",
    "sounddevice",
    "cryptography",
    "pubnub.pubnub_asyncio",
    "httpx",
    "Cryptodome",
    "devices.audio_io",
    "devices.camera",
    "telehealth_client.media.consultation_call",
    "telehealth_client.media.supervisor",
    "telehealth_client.media.worker",
    "telehealth_client.preflight",
)


def loaded_after(code: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` a fresh interpreter has in ``sys.modules`` after running ``code``."""
    probe = f"import sys\n{code}print(','.join(m for m in {names!r} if m in sys.modules))\n"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [name for name in result.stdout.strip().split(",") if name]


def test_the_agent_and_its_call_handle_load_no_aiortc() -> None:
    code = (
        "import telehealth_client.agent, telehealth_client.cli\n"
        "import telehealth_client.media.consultation_call, telehealth_client.media.signaling\n"
        "import telehealth_client.consultation.patient, telehealth_client.consultation.provider\n"
        "import telehealth_client.preflight, telehealth_client.media.supervisor\n"
        "import telehealth_client.media.child_messages, telehealth_client.media.options\n"
    )
    assert loaded_after(code, ("aiortc", "av", "aioice")) == []


def test_what_run_imports_loads_no_device_call_or_sealing_library() -> None:
    assert loaded_after(RUN_IMPORTS, NOT_AT_START) == []


def test_the_probe_sees_them_once_a_device_check_or_a_call_is_loaded() -> None:
    """Not vacuous: the same probe finds each once its first use has loaded it."""
    first_use = (
        RUN_IMPORTS + "import devices.audio_io, devices.camera, telehealth_client.preflight\n"
        "import telehealth_client.media.consultation_call\n"
        "from telehealth_client.durable.at_rest import Sealer\n"
        "Sealer('secret', purpose='probe').seal(b'x')\n"
        "from telehealth_client.pubsub.pubnub_bus import BusConfig, build_pubnub\n"
        "build_pubnub(BusConfig(user_id='probe', subscribe_key='sub-probe', cipher_key='key'))\n"
    )
    # aiortc and PyAV load in the media child only; sounddevice when audio is first opened (its
    # import probes every ALSA device).
    expected = [name for name in NOT_AT_START if name not in ("av", "aiortc", "aioice", "sounddevice")]
    assert loaded_after(first_use, NOT_AT_START) == expected
