"""The one reach into aioice (media/ice.py): pinned to the version it was measured with; this
test breaks when aioice moves, so the tuning is looked at again rather than silently lost."""

import subprocess
import sys

import aioice
import aioice.stun

from telehealth_client.media import ice


def test_the_installed_aioice_is_the_pinned_one_and_has_the_constants() -> None:
    assert aioice.__version__.startswith(ice.PINNED_VERSIONS)
    assert isinstance(aioice.stun.RETRY_RTO, float) and isinstance(aioice.stun.RETRY_MAX, int)


def test_the_tuning_sets_a_fast_first_retransmission_and_keeps_the_give_up_time() -> None:
    probe = (
        "import aioice.stun\n"
        "from telehealth_client.media.ice import tune_stun_retransmission\n"
        "print(tune_stun_retransmission(), aioice.stun.RETRY_RTO, aioice.stun.RETRY_MAX)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    applied, rto, retries = out.stdout.split()
    assert (applied, float(rto), int(retries)) == ("True", 0.1, 8)
    # A transaction still gives up after about as long as aioice's own (0.5 s x 63 = 31.5 s).
    assert 20.0 <= float(rto) * (2 ** int(retries) - 1) <= 32.0
