"""Group commit for attempt results: the results of many deliveries share one transaction.

An attempt hands its result over and waits; the batcher (`storage/batcher.py`) commits
whatever has gathered with `Attempts.record_attempts` while the next results gather behind it.
A failed batch is retried one result at a time, so only a bad result fails: it raises in its
waiting task, and its delivery, still leased to us and no longer renewed, is retried after the
lease expires.

Until its commit returns, the attempt's task is still running, so the worker's heartbeat keeps
renewing its lease: a result that was never committed leaves the delivery leased, and if this
process dies the lease expires and another worker sends it again (at least once). A result is
committed even if the task waiting for it was cancelled (a graceful stop past its grace), since
its send happened; `drain()` waits for every result handed over so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from deskbell.models import AttemptResult, Claimed
from deskbell.storage.batcher import Batcher


class AttemptStore(Protocol):
    async def record_attempts(
        self, items: Sequence[tuple[Claimed, AttemptResult]]
    ) -> list[bool]: ...


class AttemptRecorder:
    """`record_attempt`: True once committed, False if the lease was lost."""

    def __init__(self, attempts: AttemptStore) -> None:
        self.attempts = attempts
        self.batcher: Batcher[tuple[Claimed, AttemptResult], bool] = Batcher(
            "deskbell-attempt-commit", commit=attempts.record_attempts, retry_alone=True
        )

    @property
    def pending(self) -> int:
        """Results handed over and not committed (or failed) yet."""
        return self.batcher.pending

    @property
    def failed_batches(self) -> int:
        """Batches whose commit failed and were retried one result at a time."""
        return self.batcher.failed_batches

    async def record_attempt(self, claimed: Claimed, result: AttemptResult) -> bool:
        return await self.batcher.submit((claimed, result))

    async def drain(self) -> None:
        """Until every result handed over so far is committed (or has failed)."""
        await self.batcher.drain()

    async def aclose(self) -> None:
        """Commit what is pending, then stop the committing task."""
        await self.batcher.aclose()


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
