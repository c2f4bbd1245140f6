"""Group commit, written once: gather while the last commit runs, then answer everyone.

A commit costs a round trip and, on SQLite, an fsync whether it holds one item or hundreds.
A caller hands its item over and waits; one committer takes everything waiting (up to
`max_batch`) and commits it in one transaction, while the next items gather behind it. So the
batch follows the load, and a lone item waits for nothing but its own commit. Used by ingest
(new requests, `storage/ingest.py`) and by the worker's attempt results (`delivery/recorder.py`).

The rule, for every user: a caller is answered only after the commit that holds its item, and
every item handed over is answered, with its result or an error. A batch's commit is all or
nothing; when it fails, `retry_alone` chooses what its items get:
- False (ingest): each gets the error (the API answers 503), and none is stored;
- True (attempt results): each is committed again on its own, so only a bad item fails.
An item whose wait ended before its batch began (the ingest deadline, a cancelled caller) is
dropped when `skip_ended` (ingest: it was answered 503), else committed all the same (an
attempt result: the send happened).

The commit runs on the event loop (`commit`, a coroutine function) or, for SQLite's writer
(`commit_in_thread`), in a thread of its own: SQLite releases the GIL while it writes, and the
thread wakes a whole batch with one callback into the loop instead of several hops per
statement between the loop and a driver thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

from deskbell.errors import ShuttingDown
from deskbell.storage.deadline import Deadline

log = structlog.get_logger(__name__)
T = TypeVar("T")
R = TypeVar("R")
MAX_BATCH = 512
# What the commits of a batch came to: (the items of one commit, their results or its error).
_Outcomes = list[tuple[list[tuple[T, "asyncio.Future[R]"]], Sequence[R] | Exception]]


class Batcher(Generic[T, R]):
    """`await submit(item)`: the item's result once the commit that holds it has returned."""

    def __init__(
        self,
        name: str,
        *,
        commit: Callable[[list[T]], Awaitable[Sequence[R]]] | None = None,
        commit_in_thread: Callable[[list[T]], Sequence[R]] | None = None,
        thread_exit: Callable[[], None] | None = None,
        retry_alone: bool = False,
        skip_ended: bool = False,
        deadline: Deadline | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if (commit is None) == (commit_in_thread is None):
            raise ValueError("give one of commit and commit_in_thread")
        self.name = name
        self._commit = commit
        self._commit_in_thread = commit_in_thread
        self._thread_exit = thread_exit
        self.retry_alone = retry_alone
        self.skip_ended = skip_ended
        self.deadline = deadline
        self.max_batch = max_batch
        # SimpleQueue: a put is one C call with no Python-level lock, from the loop or a thread.
        self._queue: queue.SimpleQueue[tuple[T, asyncio.Future[R]] | None] = queue.SimpleQueue()
        self._ready = asyncio.Event()  # the task's wake-up (the thread blocks on the queue)
        self._idle = asyncio.Event()
        self._idle.set()
        self._unanswered = 0  # handed over, not answered by a settle yet (on the loop only)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: asyncio.Task[None] | threading.Thread | None = None
        self._closing = False
        self._stopped = False  # the runner has taken the stop mark
        self.batches = 0  # committed transactions and the items in them
        self.committed = 0
        self.failed_batches = 0  # batches that failed and were retried item by item

    @property
    def pending(self) -> int:
        """Items handed over and not answered yet."""
        return self._unanswered

    @property
    def gathering(self) -> int:
        """Items handed over that the committer has not taken yet."""
        return self._queue.qsize()

    async def submit(self, item: T) -> R:
        """Commit `item` with the next batch; its result, or the batch's error."""
        if self._closing:
            raise ShuttingDown("shutting down")
        loop = self._loop
        if loop is None:
            # Once, not per item: on Python 3.11 every get_running_loop() is a getpid() call.
            loop = self._loop = asyncio.get_running_loop()
            self._start(loop)
        future: asyncio.Future[R] = loop.create_future()
        self._queue.put((item, future))
        self._unanswered += 1
        self._idle.clear()
        self._ready.set()
        if self.deadline is not None:
            self.deadline.watch(loop, future)
        return await future

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._commit_in_thread is not None:
            self._runner = threading.Thread(target=self._run_thread, name=self.name, daemon=True)
            self._runner.start()
        else:
            # A clean context: made inside the first caller's, it would carry that caller's
            # request id into every line the committer logs.
            self._runner = loop.create_task(
                self._run_task(), name=self.name, context=contextvars.Context()
            )

    def _take(self, *, block: bool) -> list[tuple[T, asyncio.Future[R]]] | None:
        """Everything waiting, up to max_batch; None when there is nothing (without `block`)
        or the stop mark, the last item ever put (`aclose`), has been taken."""
        if self._stopped:
            return None
        try:
            first = self._queue.get(block=block)
        except queue.Empty:
            return None
        if first is None:
            self._stopped = True
            return None
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._stopped = True
                break
            batch.append(item)
        return batch

    def _live(self, taken: list[tuple[T, asyncio.Future[R]]]) -> list[tuple[T, asyncio.Future[R]]]:
        # A future's state is one field read under the GIL, also from the writer thread; a
        # wait that ends just after it is the ingest deadline's "may still be stored".
        return [w for w in taken if not w[1].done()] if self.skip_ended else taken

    async def _run_task(self) -> None:
        while not self._stopped:
            await self._ready.wait()
            self._ready.clear()
            while (taken := self._take(block=False)) is not None:
                try:
                    outcomes = await self._commit_async(self._live(taken))
                except Exception as exc:  # a bug here must not leave anyone waiting
                    log.exception("batch_commit_crashed", batcher=self.name, size=len(taken))
                    outcomes = [(taken, exc)]
                self._settle(taken, outcomes)

    def _run_thread(self) -> None:
        assert self._loop is not None
        assert self._commit_in_thread is not None
        try:
            while (taken := self._take(block=True)) is not None:
                try:
                    outcomes = self._commit_blocking(self._live(taken))
                except Exception as exc:  # the thread must go on, and answer everyone
                    log.exception("batch_commit_crashed", batcher=self.name, size=len(taken))
                    outcomes = [(taken, exc)]
                self._loop.call_soon_threadsafe(self._settle, taken, outcomes)
        finally:
            if self._thread_exit is not None:
                self._thread_exit()

    async def _commit_async(self, batch: list[tuple[T, asyncio.Future[R]]]) -> _Outcomes[T, R]:
        if not batch:
            return []
        assert self._commit is not None
        try:
            return [(batch, await self._commit([item for item, _ in batch]))]
        except Exception as exc:
            if not self._split(batch, exc):
                return [(batch, exc)]
        return [outcome for one in batch for outcome in await self._commit_async([one])]

    def _commit_blocking(self, batch: list[tuple[T, asyncio.Future[R]]]) -> _Outcomes[T, R]:
        if not batch:
            return []
        assert self._commit_in_thread is not None
        try:
            return [(batch, self._commit_in_thread([item for item, _ in batch]))]
        except Exception as exc:
            if not self._split(batch, exc):
                return [(batch, exc)]
        return [outcome for one in batch for outcome in self._commit_blocking([one])]

    def _split(self, batch: Sequence[object], exc: Exception) -> bool:
        """Log a failed commit; whether its items are to be committed again one by one."""
        split = self.retry_alone and len(batch) > 1
        log.warning(
            "batch_commit_failed",
            batcher=self.name,
            size=len(batch),
            error=str(exc),
            retry_alone=split,
        )
        if split:
            self.failed_batches += 1
        return split

    def _settle(self, taken: list[tuple[T, asyncio.Future[R]]], outcomes: _Outcomes[T, R]) -> None:
        """On the loop: answer the items of each commit; count everything taken as answered."""
        for part, outcome in outcomes:
            if isinstance(outcome, Exception):
                for _, future in part:
                    if not future.done():
                        future.set_exception(outcome)
                continue
            self.batches += 1
            self.committed += len(part)
            for (_, future), result in zip(part, outcome, strict=True):
                if not future.done():  # a caller cancelled meanwhile: committed all the same
                    future.set_result(result)
        self._unanswered -= len(taken)
        if self._unanswered == 0:
            self._idle.set()

    async def drain(self) -> None:
        """Until every item handed over so far is answered."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Refuse new items, commit those handed over, then stop the committer."""
        if self._closing:
            return
        self._closing = True
        if self.deadline is not None:
            await self.deadline.aclose()
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._queue.put(None)  # the stop mark: after it, nothing is put
        self._ready.set()
        if isinstance(runner, threading.Thread):
            await asyncio.get_running_loop().run_in_executor(None, runner.join)
        else:
            await runner
        # The runner's last settles were queued before the join's callback (or ran in the
        # task): every item handed over has been answered.
