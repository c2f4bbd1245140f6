"""The worker pool: claims due deliveries under a lease and runs each attempt as a task.

One loop claims as many deliveries as it has free slots, so a slow send occupies one slot and
never the loop. It sleeps until the earliest retry is due, a poll interval passes, or `wake()`
is called (the ingest path calls it after a commit in the same process).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping
from datetime import timedelta

import structlog
import uuid_utils

from deskbell.channels.base import Channel, ChannelSettings
from deskbell.clock import Clock
from deskbell.delivery.dispatch import dispatch
from deskbell.storage.store import Claimed, Store

log = structlog.get_logger(__name__)

ChannelLookup = Callable[[], Mapping[str, tuple[Channel, ChannelSettings]]]


def worker_id() -> str:
    """Unique per process start, readable in the attempts table: host:pid:random."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{str(uuid_utils.uuid4())[:8]}"


class WorkerPool:
    def __init__(
        self,
        store: Store,
        channels: ChannelLookup,
        clock: Clock,
        *,
        concurrency: int = 16,
        lease: timedelta = timedelta(seconds=30),
        poll_seconds: float = 1.0,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.channels = channels
        self.clock = clock
        self.concurrency = concurrency
        self.lease = lease
        self.poll_seconds = poll_seconds
        self.owner = owner or worker_id()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        log.info("worker_started", owner=self.owner, concurrency=self.concurrency)
        while not self._stopping.is_set():
            free = self.concurrency - len(self._inflight)
            claimed: list[Claimed] = []
            if free > 0:
                self._wake.clear()
                try:
                    claimed = await self.store.claim(
                        self.owner, self.clock.now(), lease=self.lease, limit=free
                    )
                except Exception:
                    log.exception("claim_failed")
            for item in claimed:
                task = asyncio.create_task(self._attempt(item))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            if len(claimed) < free:
                await self._idle()
            elif free <= 0:
                await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)

    async def _attempt(self, claimed: Claimed) -> None:
        try:
            await dispatch(claimed, self.channels(), self.store, self.clock)
        except Exception:
            log.exception("attempt_failed", delivery_id=claimed.delivery.id)
        self._wake.set()  # a slot is free

    async def _idle(self) -> None:
        timeout = self.poll_seconds
        try:
            due = await self.store.next_due_at()
        except Exception:
            due = None
        if due is not None:
            timeout = min(timeout, max(0.0, (due - self.clock.now()).total_seconds()))
        waiters = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self._stopping.wait()),
        ]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, let in-flight sends finish for up to `grace` seconds, then cancel."""
        self._stopping.set()
        if self._inflight:
            _, pending = await asyncio.wait(self._inflight, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        log.info("worker_stopped", owner=self.owner)
