"""The one thread a store's SQLite work runs on: in order, off the event loop, and named in misuse."""

from __future__ import annotations

import threading

import pytest

from telehealth_client.durable.one_thread import OneThread


async def test_jobs_run_in_order_on_one_thread_that_is_not_the_loop_s() -> None:
    worker = OneThread("outbox")
    worker.start()
    seen: list[tuple[int, str]] = []
    try:
        for n in range(5):
            await worker.run(lambda n=n: seen.append((n, threading.current_thread().name)))
        assert [n for n, _ in seen] == [0, 1, 2, 3, 4]
        names = {name for _, name in seen}
        assert len(names) == 1 and names != {threading.current_thread().name}
        assert next(iter(names)).startswith("outbox-sqlite")
        with pytest.raises(ZeroDivisionError):  # a job's exception comes back to the caller
            await worker.run(lambda: 1 // 0)
    finally:
        closed_on: list[str] = []
        await worker.stop(lambda: closed_on.append(threading.current_thread().name))
    assert closed_on == [next(iter(names))] and not worker.running


async def test_misuse_names_the_store() -> None:
    worker = OneThread("audit store")
    with pytest.raises(RuntimeError, match="the audit store is not open"):
        await worker.run(lambda: None)
    worker.start()
    with pytest.raises(RuntimeError, match="the audit store is already open"):
        worker.start()
    await worker.stop()
    await worker.stop()  # a second stop is nothing
    with pytest.raises(RuntimeError, match="is not open"):
        await worker.run(lambda: None)
