"""Group commit: concurrent ingest requests share one transaction.

A commit costs a round trip and (on SQLite) an fsync whether it holds one row or hundreds.
Requests hand their rows to this writer and wait; while one batch commits, the next ones
gather, so under load each commit carries many requests and at low load a request waits for
nothing but its own commit. A request is answered only after the commit that holds it; if that
commit fails, every request in it gets the error (the API answers 503) and none of them is
stored.

Ids are made when a request arrives, so the 202 is built from what the request already holds
and nothing is read back. The rows go to the driver as tuples through SQL compiled once
(`IngestWriter`): per-row SQLAlchemy compilation and type processing cost more CPU than the
insert itself. The batch's one timestamp is converted once with the column type's own
processor, so the stored values are exactly what the ORM-level code writes and reads.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Dialect

from deskbell.models import AssistanceRequestIn, DeliveryReceipt, DeliveryStatus, Receipt
from deskbell.routing.router import Target
from deskbell.storage.deadline import Deadline, abandoned
from deskbell.storage.engine import Database
from deskbell.storage.queue import notify_due
from deskbell.storage.records import NO_TRACE, RequestTrace, new_id
from deskbell.storage.tables import UTCDateTime, deliveries, requests

log = structlog.get_logger(__name__)
MAX_BATCH = 512
# The stored payload is the model's JSON without nulls (as `Store` writes it). Its pydantic-core
# serializer is called directly: `model_dump_json` passes a dozen keyword arguments through
# pydantic-core's argument parsing on every call, half its cost.
_SERIALIZER = AssistanceRequestIn.__pydantic_serializer__
REQUEST_COLUMNS = ("id", "topic", "payload", "created_at", "http_request_id", "traceparent")
DELIVERY_COLUMNS = (
    "id",
    "request_id",
    "channel",
    "status",
    "attempts",
    "created_at",
    "updated_at",
    "next_attempt_at",
    "fallback_channel",
)


@dataclass(slots=True)
class PendingRequest:
    """One accepted request waiting for its commit, with the ids its 202 will carry. Not
    frozen: see `DeliveryReceipt` (models.py)."""

    id: str
    topic: str
    payload_json: str
    deliveries: tuple[tuple[str, str, str | None], ...]  # (delivery id, channel, fallback)
    trace: RequestTrace

    @classmethod
    def of(
        cls, payload: AssistanceRequestIn, targets: Sequence[Target], trace: RequestTrace
    ) -> PendingRequest:
        return cls(
            new_id(),
            payload.topic,
            _SERIALIZER.to_json(payload, exclude_none=True).decode(),
            tuple([(new_id(), t.channel, t.fallback) for t in targets]),
            trace,
        )

    def receipt(self) -> Receipt:
        return Receipt(
            self.id,
            self.topic,
            tuple([DeliveryReceipt(d, channel) for d, channel, _ in self.deliveries]),
        )


def _insert_sql(table: sa.Table, columns: Sequence[str], dialect: Dialect) -> str:
    """The dialect's own INSERT text, with positional parameters in `columns` order."""
    compiled = table.insert().values({c: sa.bindparam(c) for c in columns}).compile(dialect=dialect)
    if compiled.positiontup is None or list(compiled.positiontup) != list(columns):
        raise RuntimeError(f"unexpected parameter order for {table.name}")
    return str(compiled)


def stamp_for(dialect: Dialect) -> Callable[[datetime], object]:
    """A timestamp as the driver gets it for a UTCDateTime column: `dialect_impl` applies the
    dialect's own DateTime formatting too (SQLite's text), not only ours."""
    stamp = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    return stamp if stamp is not None else lambda value: value


class IngestRows:
    """The INSERTs of a batch as driver SQL (compiled once for the dialect) and row tuples."""

    def __init__(self, dialect: Dialect) -> None:
        self.requests_sql = _insert_sql(requests, REQUEST_COLUMNS, dialect)
        self.deliveries_sql = _insert_sql(deliveries, DELIVERY_COLUMNS, dialect)
        self._stamp = stamp_for(dialect)

    def of(
        self, items: Sequence[PendingRequest], now: datetime
    ) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        """(request rows, delivery rows), all stamped with the batch's one `now`."""
        at = self._stamp(now)
        pending = DeliveryStatus.PENDING.value
        request_rows: list[tuple[object, ...]] = [
            (i.id, i.topic, i.payload_json, at, i.trace.http_request_id, i.trace.traceparent)
            for i in items
        ]
        delivery_rows: list[tuple[object, ...]] = [
            (delivery_id, i.id, channel, pending, 0, at, at, at, fallback)
            for i in items
            for delivery_id, channel, fallback in i.deliveries
        ]
        return request_rows, delivery_rows


class IngestWriter:
    """Writes a batch of new requests and their pending deliveries in one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.rows = IngestRows(db.writer.dialect)

    async def write(self, items: Sequence[PendingRequest], now: datetime) -> None:
        """All are stored, or none and the error is raised."""
        request_rows, delivery_rows = self.rows.of(items, now)
        async with self.db.writer.begin() as conn:
            await conn.exec_driver_sql(self.rows.requests_sql, request_rows)
            if delivery_rows:
                await conn.exec_driver_sql(self.rows.deliveries_sql, delivery_rows)
            await notify_due(conn)


class Ingest(Protocol):
    """What the runtime needs of a group commit (this module's, or storage/sqlite_ingest.py's)."""

    batches: int
    committed: int
    deadline: Deadline  # bounds each wait for a commit (storage/deadline.py)

    async def accept(
        self, payload: AssistanceRequestIn, targets: Sequence[Target], trace: RequestTrace = ...
    ) -> Receipt: ...

    async def aclose(self) -> None: ...


class GroupCommitter:
    """Group commit through the async engine: PostgreSQL (and SQLite without a file)."""

    def __init__(
        self,
        writer: IngestWriter,
        now: Callable[[], datetime],
        max_batch: int = MAX_BATCH,
        *,
        timeout: float | None = None,
    ) -> None:
        self.writer = writer
        self.now = now
        self.max_batch = max_batch
        self.deadline = Deadline(timeout)
        self._waiting: list[tuple[PendingRequest, asyncio.Future[None]]] = []
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # committed transactions and the requests in them, for tests
        self.committed = 0

    async def accept(
        self,
        payload: AssistanceRequestIn,
        targets: Sequence[Target],
        trace: RequestTrace = NO_TRACE,
    ) -> Receipt:
        """Store one request with the next group; returns once it is committed. Raises
        IngestTimeout past the deadline (the request may still be stored)."""
        if self._task is None:
            # A clean context: made inside the first request's, it would carry that request's
            # http_request_id into every line the writer logs.
            self._task = asyncio.create_task(
                self._run(), name="deskbell-group-commit", context=contextvars.Context()
            )
        pending = PendingRequest.of(payload, targets, trace)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiting.append((pending, future))
        self._ready.set()
        self.deadline.watch(loop, future)
        await future
        return pending.receipt()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._waiting:
                taken = self._waiting[: self.max_batch]
                del self._waiting[: self.max_batch]
                # A request whose wait already ended (deadline) was answered 503: not stored.
                batch = [item for item in taken if not abandoned(item[1])]
                if batch:
                    await self._commit(batch)

    async def _commit(self, batch: list[tuple[PendingRequest, asyncio.Future[None]]]) -> None:
        try:
            await self.writer.write([item for item, _ in batch], self.now())
        except Exception as exc:
            log.error("group_commit_failed", size=len(batch), error=str(exc))
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.committed += len(batch)
        for _, future in batch:
            if not future.done():
                future.set_result(None)

    async def aclose(self) -> None:
        await self.deadline.aclose()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for _, future in self._waiting:
            if not future.done():
                future.set_exception(RuntimeError("shutting down"))
        self._waiting.clear()
