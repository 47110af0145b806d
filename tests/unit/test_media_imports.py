"""The agent never loads aiortc or PyAV: they belong in the media child (native memory, import time)."""

import subprocess
import sys


def test_the_agent_and_its_call_handle_load_no_aiortc() -> None:
    probe = (
        "import sys\n"
        "import telehealth_client.agent, telehealth_client.cli\n"
        "import telehealth_client.media.consultation_call, telehealth_client.media.signaling\n"
        "import telehealth_client.consultation.patient, telehealth_client.consultation.provider\n"
        "import telehealth_client.preflight, telehealth_client.media.supervisor\n"
        "import telehealth_client.media.child_messages, telehealth_client.media.options\n"
        "loaded = sorted(m for m in ('aiortc', 'av', 'aioice') if m in sys.modules)\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""
