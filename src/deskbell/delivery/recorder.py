"""Group commit for attempt results: the results of many deliveries share one transaction.

Committing each result alone cost a transaction per delivery (on SQLite an fsync), which
capped a worker at a few hundred deliveries a second. Here an attempt hands its result over
and waits; one task commits whatever has gathered (`Store.record_attempts`), while the next
results gather behind it. So the batch size follows the load, and a lone result waits for
nothing but its own commit.

Until its commit returns, the attempt's task is still running, so the worker's heartbeat keeps
renewing its lease: a result that was never committed leaves the delivery leased, and if this
process dies the lease expires and another worker sends it again (at least once). A result is
committed even if the task waiting for it was cancelled (a graceful stop past its grace), since
its send happened; `drain()` waits for every result handed over so far.

If a batch commit fails, its results are committed one by one, so one bad result cannot fail
the others; a result whose own commit fails raises in its waiting task, and its delivery,
still leased to us and no longer renewed, is retried after the lease expires.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence
from typing import Protocol

import structlog

from deskbell.storage.records import AttemptResult, Claimed

log = structlog.get_logger(__name__)
MAX_BATCH = 512

Item = tuple[Claimed, AttemptResult, "asyncio.Future[bool]"]


class AttemptStore(Protocol):
    async def record_attempts(
        self, items: Sequence[tuple[Claimed, AttemptResult]]
    ) -> list[bool]: ...


class AttemptRecorder:
    def __init__(self, store: AttemptStore, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._waiting: list[Item] = []
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._committing = 0
        self.batches = 0  # transactions that committed results
        self.committed = 0  # results they held
        self.failed_batches = 0  # batches whose commit failed and were retried one by one

    @property
    def pending(self) -> int:
        """Results handed over and not committed (or failed) yet."""
        return len(self._waiting) + self._committing

    async def record_attempt(self, claimed: Claimed, result: AttemptResult) -> bool:
        """Record with the next group; True once committed, False if the lease was lost."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append((claimed, result, future))
        self._idle.clear()
        self._ready.set()
        if self._task is None:
            # A context of its own: not the first caller's, whose request id and span would
            # otherwise be on every line this task logs.
            self._task = asyncio.create_task(
                self._run(), name="deskbell-attempt-commit", context=contextvars.Context()
            )
        return await future

    async def drain(self) -> None:
        """Until every result handed over so far is committed (or has failed)."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Commit what is pending, then stop the committing task."""
        if self._task is None:
            return
        await self.drain()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                self._committing = len(batch)
                try:
                    await self._commit(batch)
                except Exception as exc:  # a bug here must not leave attempts waiting forever
                    log.exception("attempt_commit_crashed", size=len(batch))
                    for item in batch:
                        _fail(item, exc)
                finally:
                    self._committing = 0
            self._idle.set()

    async def _commit(self, batch: list[Item]) -> None:
        try:
            kept = await self.store.record_attempts([(c, r) for c, r, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            self.failed_batches += 1
            log.warning("attempt_batch_failed", size=len(batch), error=str(exc))
            for item in batch:  # one by one: a bad result fails alone
                await self._commit([item])
            return
        self.batches += 1
        self.committed += len(batch)
        for (_, _, future), ok in zip(batch, kept, strict=True):
            if not future.done():  # its task may have been cancelled: committed all the same
                future.set_result(ok)


def _fail(item: Item, exc: Exception) -> None:
    claimed, _, future = item
    log.error("attempt_record_failed", delivery_id=claimed.delivery.id, error=str(exc))
    if not future.done():
        future.set_exception(exc)


class Handover:
    """The recorder as dispatch's result sink, striking each attempt from `unrecorded` as it
    hands its result over: from then on, a lease the worker's heartbeat finds gone was
    settled by our own commit, not lost to another worker."""

    def __init__(self, recorder: AttemptRecorder, unrecorded: set[str]) -> None:
        self.recorder = recorder
        self.unrecorded = unrecorded

    async def record_attempt(self, claimed: Claimed, result: AttemptResult) -> bool:
        self.unrecorded.discard(claimed.delivery.id)
        return await self.recorder.record_attempt(claimed, result)
