"""storage/deadline.py on its own: waits past the deadline fail with IngestTimeout, answered
ones are let go and the timer stops when nothing waits; `run` leaves late work running (held
and logged) and `aclose` cancels it. The deadline is real time (short), as in production."""

from __future__ import annotations

import asyncio

import pytest

from deskbell.storage.deadline import Deadline, IngestTimeout
from tests.fakes import wait_until_async

SECONDS = 0.05


async def test_a_wait_past_the_deadline_fails_and_an_answered_one_is_let_go() -> None:
    loop = asyncio.get_running_loop()
    deadline = Deadline(SECONDS)
    stalled: asyncio.Future[None] = loop.create_future()
    answered: asyncio.Future[None] = loop.create_future()
    deadline.watch(loop, stalled)
    deadline.watch(loop, answered)
    answered.set_result(None)
    started = loop.time()
    with pytest.raises(IngestTimeout) as caught:
        await stalled
    assert SECONDS <= loop.time() - started < SECONDS + 1.0
    assert caught.value.retry_after == 1
    await wait_until_async(lambda: deadline._timer is None, what="the timer to stop")
    await deadline.aclose()


async def test_late_work_goes_on_after_the_timeout_and_is_released() -> None:
    deadline = Deadline(SECONDS)
    release = asyncio.Event()
    finished: list[str] = []

    async def work() -> str:
        await release.wait()
        finished.append("committed")
        return "receipt"

    with pytest.raises(IngestTimeout):
        await deadline.run(work())
    assert deadline.late == 1
    release.set()
    await wait_until_async(lambda: deadline.late == 0, what="late work to finish")
    assert finished == ["committed"]
    assert await deadline.run(asyncio.sleep(0, "fast")) == "fast"
    await deadline.aclose()


async def test_aclose_cancels_late_work() -> None:
    deadline = Deadline(SECONDS)
    never = asyncio.Event()
    with pytest.raises(IngestTimeout):
        await deadline.run(never.wait())
    assert deadline.late == 1
    await deadline.aclose()
    assert deadline.late == 0


async def test_no_deadline_waits_as_long_as_it_takes() -> None:
    deadline = Deadline(None)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()
    deadline.watch(loop, future)
    assert deadline._timer is None
    assert await deadline.run(asyncio.sleep(0, "done")) == "done"
