"""The seeded soak (issue 25): ``--consultations`` consultations back to back between a kiosk and a
provider's cart, each a ``telehealth-agent run`` process with media, on the development stack (relay
with fault injection, clinic stand-in with its audit sink, coturn), with faults at seeded moments
(``--seed``: the same seed, the same plan). A killed agent is started again, as systemd would.

Prints one JSON line per consultation as it ends (completed or the failing step, its faults and the
call's recovery after each, its chat counts by message ID, each agent's and its media children's RSS,
open descriptors and threads at its start and end), then the summary line: completed and failed,
faults by kind, chat sent / delivered / duplicated / lost, each agent's audit events written /
delivered / duplicated / lost against the sink and its chain verified, recovery times per fault kind
(p50, max), the growth per consultation fitted after warm-up, and ``problems`` (empty on a good run).
Exits 1 when there are problems. tests/integration/soak/test_soak.py runs it CI-sized.

    .venv/bin/python scripts/soak.py --consultations 10 --seed 1 [--report soak.html]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from telehealth_client import logs  # noqa: E402
from tests.support.soak.faults import KINDS  # noqa: E402
from tests.support.soak.runner import judge, soak  # noqa: E402


def emit(row: dict[str, Any]) -> None:
    print(json.dumps(row, default=str), flush=True)


def dump_tasks() -> None:
    """SIGUSR1: every task's stack on stderr (where a run waits, when one seems stuck)."""
    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


async def run(args: argparse.Namespace, directory: Path, keep: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    main_task = asyncio.current_task()
    assert main_task is not None
    # SIGTERM and SIGINT cancel the run: the agents are stopped and the stack closed on the way out.
    for stop in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(stop, main_task.cancel)
    only = tuple(args.only.split(",")) if args.only else KINDS
    return await soak(args.consultations, args.seed, directory, keep, only)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--consultations", type=int, default=10, help="how many (default 10)")
    parser.add_argument("--seed", type=int, default=1, help="the fault plan's seed (default 1)")
    parser.add_argument(
        "--only", help=f"comma-separated fault kinds to draw from (default all: {','.join(KINDS)})"
    )
    parser.add_argument("--report", type=Path, help="also write an HTML report with plots here")
    args = parser.parse_args()
    if args.consultations < 1:
        parser.error("--consultations must be at least 1")
    if args.only and set(args.only.split(",")) - set(KINDS):
        parser.error(f"--only: unknown fault kinds; the kinds are {', '.join(KINDS)}")
    logs.configure("WARNING")
    for handler in logging.getLogger().handlers:  # stdout is the JSON lines': the stack's warnings go aside
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sys.stderr)
    rows: list[dict[str, Any]] = []

    def keep(row: dict[str, Any]) -> None:
        rows.append(row)
        emit(row)

    with tempfile.TemporaryDirectory(prefix="soak-") as directory:
        summary = asyncio.run(run(args, Path(directory), keep))
    summary["problems"] = judge(summary)
    if args.report is not None:
        from tests.support.soak.report import write_report

        write_report(args.report, rows, summary)
    emit(summary)
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
