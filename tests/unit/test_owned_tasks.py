"""The owner's set of background tasks: cancelled, finished or waited for, never leaked."""

from __future__ import annotations

import asyncio

from telehealth_client.tasks import OwnedTasks


async def test_cancel_all_ends_every_task_and_a_done_task_is_forgotten() -> None:
    tasks = OwnedTasks()
    done = tasks.spawn(asyncio.sleep(0), "quick")
    await done
    assert len(tasks) == 0 and not tasks  # forgotten once done
    forever = tasks.spawn(asyncio.Event().wait(), "lookup")
    assert forever.get_name() == "lookup" and len(tasks) == 1
    await tasks.cancel_all()
    assert forever.cancelled() and not tasks


async def test_finish_waits_for_every_task_also_those_started_meanwhile_and_cancels_none() -> None:
    tasks = OwnedTasks()
    release = asyncio.Event()
    finished: list[str] = []

    async def save(name: str, then: str | None = None) -> None:
        await release.wait()
        finished.append(name)
        if then is not None:
            tasks.spawn(save(then), then)

    tasks.spawn(save("first", then="second"))
    finishing = asyncio.ensure_future(tasks.finish())
    await asyncio.sleep(0)
    assert not finishing.done()
    release.set()
    await asyncio.wait_for(finishing, 5)
    assert finished == ["first", "second"] and not tasks


async def test_wait_gives_up_after_its_time_and_the_rest_goes_on_owned() -> None:
    tasks = OwnedTasks()
    gate = asyncio.Event()
    slow = tasks.spawn(gate.wait(), "close")
    await tasks.wait(0.01)  # the wait's own bound: nothing else to wait for here
    assert not slow.done() and len(tasks) == 1
    gate.set()
    await tasks.finish()
    assert slow.done() and not slow.cancelled()


async def test_a_plain_awaitable_is_owned_as_a_task_too() -> None:
    tasks = OwnedTasks()
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = tasks.spawn(future, "future")
    future.set_result(7)
    assert await task == 7
