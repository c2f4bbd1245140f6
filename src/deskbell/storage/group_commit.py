"""Group commit: concurrent ingest requests share one transaction.

A commit costs a round trip and (on SQLite) an fsync whether it holds one row or hundreds.
Requests hand their rows to this writer and wait; while one batch commits, the next ones
gather, so under load each commit carries many requests and at low load a request waits for
nothing but its own commit. A request is answered only after the commit that holds it; if that
commit fails, every request in it gets the error (the API answers 503) and none of them is
stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

import structlog

from deskbell.models import AssistanceRequestIn, StoredRequest
from deskbell.routing.router import Target
from deskbell.storage.records import NO_TRACE, RequestTrace
from deskbell.storage.store import NewRequest, Store

log = structlog.get_logger(__name__)
MAX_BATCH = 512


class GroupCommitter:
    def __init__(self, store: Store, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._waiting: list[tuple[NewRequest, asyncio.Future[StoredRequest]]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def accept(
        self,
        payload: AssistanceRequestIn,
        targets: Sequence[Target],
        now: datetime,
        trace: RequestTrace = NO_TRACE,
    ) -> StoredRequest:
        """Store one request with the next group; returns once it is committed."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="deskbell-group-commit")
        future: asyncio.Future[StoredRequest] = asyncio.get_running_loop().create_future()
        self._waiting.append((NewRequest(payload, targets, now, trace), future))
        self._ready.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._waiting:
                batch = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[NewRequest, asyncio.Future[StoredRequest]]]) -> None:
        try:
            stored = await self.store.accept_many([item for item, _ in batch])
        except Exception as exc:
            log.error("group_commit_failed", size=len(batch), error=str(exc))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, stored, strict=True):
            if not future.done():
                future.set_result(result)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for _, future in self._waiting:
            if not future.done():
                future.set_exception(RuntimeError("shutting down"))
        self._waiting.clear()
