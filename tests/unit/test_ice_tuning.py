"""The one reach into aioice (media/ice.py): pinned to the version it was measured with; these
tests break when aioice moves, so the tuning is looked at again rather than silently lost. The
tuning changes aioice for the whole process, so it is tried in a child process."""

import json
import subprocess
import sys

import aioice
import aioice.stun

from telehealth_client.media import ice


def run_probe(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout


def test_the_installed_aioice_is_the_pinned_one_and_has_what_the_tuning_sets() -> None:
    assert aioice.__version__.startswith(ice.PINNED_VERSIONS)
    assert isinstance(aioice.stun.RETRY_RTO, float) and isinstance(aioice.stun.RETRY_MAX, int)
    assert callable(getattr(aioice.stun.Transaction, "_Transaction__retry", None))


def test_the_tuning_sets_a_fast_first_retransmission_and_keeps_the_give_up_time() -> None:
    probe = (
        "import aioice.stun\n"
        "from telehealth_client.media.ice import tune_stun_retransmission\n"
        "print(tune_stun_retransmission(), tune_stun_retransmission(), aioice.stun.RETRY_RTO,"
        " aioice.stun.RETRY_MAX)\n"
    )
    applied, again, rto, retries = run_probe(probe).split()
    assert (applied, again, float(rto), int(retries)) == ("True", "True", 0.1, 100)
    # A transaction still gives up after about as long as aioice's own (0.5 s x 63 = 31.5 s).
    assert 20.0 <= ice.give_up_after() <= 32.0


# A real STUN transaction sent to a UDP socket that never answers: the gaps between the datagrams
# it receives are aioice's retransmission intervals.
PACING_PROBE = """
import asyncio, json, time
import aioice.stun
from telehealth_client.media.ice import tune_stun_retransmission

class Silent(asyncio.DatagramProtocol):
    def __init__(self):
        self.arrivals = []
        self.enough = asyncio.get_running_loop().create_future()
    def datagram_received(self, data, addr):
        self.arrivals.append(time.monotonic())
        if len(self.arrivals) == 9 and not self.enough.done():
            self.enough.set_result(None)

class Sender(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport
    def send_stun(self, message, addr):
        self.transport.sendto(bytes(message), addr)

async def main():
    assert tune_stun_retransmission()
    loop = asyncio.get_running_loop()
    silent_transport, silent = await loop.create_datagram_endpoint(Silent, local_addr=("127.0.0.1", 0))
    sender_transport, sender = await loop.create_datagram_endpoint(Sender, local_addr=("127.0.0.1", 0))
    request = aioice.stun.Message(
        message_method=aioice.stun.Method.BINDING, message_class=aioice.stun.Class.REQUEST
    )
    transaction = aioice.stun.Transaction(request, silent_transport.get_extra_info("sockname"), sender)
    task = asyncio.ensure_future(transaction.run())
    await asyncio.wait_for(silent.enough, 20)
    task.cancel()
    times = silent.arrivals
    print(json.dumps([round(b - a, 3) for a, b in zip(times, times[1:])]))

asyncio.run(main())
"""


def test_tuned_retransmissions_double_from_100_ms_up_to_250_ms_and_then_keep_that_pace() -> None:
    gaps = json.loads(run_probe(PACING_PROBE))
    assert len(gaps) == 8
    assert 0.07 <= gaps[0] <= 0.2 and 0.15 <= gaps[1] <= 0.3
    # Never more than 250 ms apart (plus scheduling slack): a path that comes back is used at once;
    # aioice alone doubles on (0.5, 1, 2, 4, 8 s...).
    assert all(0.2 <= gap <= 0.4 for gap in gaps[2:]), gaps
