"""The ingest deadline: how long a request waits for the commit that stores it.

A stalled database (a held lock, a stuck disk) would otherwise hold every ingest request for
as long as the stall lasts. Past the deadline the wait ends with `IngestTimeout` (the API
answers 503 with Retry-After), but the write itself is never interrupted: a batch already
handed to the database may still commit later, so the answer says "maybe stored" and a client
retries with its Idempotency-Key. A request whose batch had not begun when its wait ended is
dropped by the writer (`storage/batcher.py`, `skip_ended`), so it is never stored.

The group-commit waits are watched by one timer per writer, not one per request (see
docs/performance.md): a request costs an append to a list, and the timer runs only while
requests wait.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable
from typing import Any, TypeVar

import structlog

from deskbell.errors import DeskbellError

T = TypeVar("T")
log = structlog.get_logger(__name__)
MAX_TICK = 0.1  # seconds: how late past its deadline a group-commit wait may end


class IngestTimeout(DeskbellError):
    """The commit did not finish within the ingest deadline; the request may still be stored."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the database did not commit within {seconds:g} s")
        self.seconds = seconds

    @property
    def retry_after(self) -> int:
        """Whole seconds a client should wait before retrying: the deadline itself."""
        return max(1, math.ceil(self.seconds))


class Deadline:
    """Ends group-commit waits that outlive `seconds`, and bounds other ingest waits (`run`).

    `watch` only appends the future to the list of the current tick; each tick (while any
    wait is watched) closes that list with its due time, `seconds` later, drops the answered
    futures and fails the due ones. So a wait ends between `seconds` and `seconds` plus two
    ticks, and a request costs no clock read and no timer of its own.
    `None` seconds: no deadline (what a writer built without settings gets)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.tick = min(MAX_TICK, seconds / 4) if seconds else MAX_TICK
        self._open: list[asyncio.Future[Any]] = []  # watched since the last tick
        self._closed: list[tuple[float, list[asyncio.Future[Any]]]] = []  # (due, waits)
        self._timer: asyncio.TimerHandle | None = None
        self._late: set[asyncio.Task[object]] = set()

    def watch(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        """Fail `future` with IngestTimeout if it is still pending `seconds` from now."""
        if self.seconds is None:
            return
        self._open.append(future)
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._check, loop)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.seconds is not None
        now = loop.time()
        if self._open:
            self._closed.append((now + self.seconds, self._open))
            self._open = []
        kept = []
        for due, futures in self._closed:
            waiting = [f for f in futures if not f.done()]
            if waiting and due <= now:
                for future in waiting:
                    future.set_exception(IngestTimeout(self.seconds))
            elif waiting:
                kept.append((due, waiting))
        self._closed = kept
        self._timer = loop.call_later(self.tick, self._check, loop) if kept else None

    @property
    def late(self) -> int:
        """Work still running after its caller was answered IngestTimeout."""
        return len(self._late)

    async def run(self, work: Awaitable[T]) -> T:
        """Await `work` (a transaction of its own) for at most `seconds`.

        Past the deadline it raises IngestTimeout while `work` goes on in its own task:
        cancelling a transaction mid-statement would wait for the driver anyway (aiosqlite
        runs the blocked call to its end) or leave its connection to be thrown away."""
        if self.seconds is None:
            return await work
        task = asyncio.ensure_future(work)
        try:
            async with asyncio.timeout(self.seconds):
                return await asyncio.shield(task)
        except TimeoutError:
            if task.done():  # the work's own TimeoutError, not the deadline's
                raise
            self._keep(task)
            raise IngestTimeout(self.seconds) from None
        except asyncio.CancelledError:
            if not task.done():
                self._keep(task)
            raise

    def _keep(self, task: asyncio.Task[T]) -> None:
        """Hold a late task until it ends, and log how it ended."""
        self._late.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[T]) -> None:
        self._late.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            log.info("ingest_committed_late")
        else:
            log.warning("ingest_failed_late", error=str(error))

    async def aclose(self) -> None:
        """Stop the timer; cancel late work still waiting (its transaction rolls back)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        late = list(self._late)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
