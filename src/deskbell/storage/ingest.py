"""Accepting requests: each is stored with one pending delivery per target, in one transaction.

Without an Idempotency-Key a request joins the group commit (`storage/batcher.py`): its ids
are made on arrival, so its 202 is built from what it already holds and nothing is read back,
and it is answered after the commit that holds it. If that commit fails, every request of it
gets the error (the API answers 503) and none is stored. On a SQLite file the batches are
written by a thread of their own (`storage/sqlite_ingest.py`); otherwise (PostgreSQL, SQLite
in memory) on the async engine.

With a key, a request takes its own transaction (`accept_one`): the key must be checked and
claimed atomically, and is scoped by the caller (`api/idempotency.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from deskbell.errors import IdempotencyConflict
from deskbell.models import (
    NO_TRACE,
    AssistanceRequestIn,
    DeliveryReceipt,
    DeliveryStatus,
    Receipt,
    RequestTrace,
)
from deskbell.routing.router import Target
from deskbell.storage.batcher import Batcher
from deskbell.storage.deadline import Deadline
from deskbell.storage.engine import Database, notify_due
from deskbell.storage.rows import NewRequest, NewRows
from deskbell.storage.sqlite_ingest import SQLiteWriter, sqlite_file
from deskbell.storage.tables import deliveries, requests

IDEMPOTENCY_WINDOW = timedelta(hours=24)


def ingest_batcher(
    db: Database | None,
    now: Callable[[], datetime],
    *,
    path: str | None = None,
    timeout: float | None = None,
) -> Batcher[NewRequest, None]:
    """The group commit of new requests: in a thread on the SQLite file `path` (or `db`'s),
    else on `db`'s async engine."""
    deadline = Deadline(timeout)
    path = path or (sqlite_file(db.url) if db is not None else None)
    if path is not None:
        writer = SQLiteWriter(path, now)
        return Batcher(
            "deskbell-sqlite-ingest",
            commit_in_thread=writer.write,
            thread_exit=writer.close,
            skip_ended=True,
            deadline=deadline,
        )
    assert db is not None
    rows = NewRows(db.writer.dialect)

    async def write(items: list[NewRequest]) -> list[None]:
        async with db.writer.begin() as conn:
            await rows.insert(conn, items, now())
            await notify_due(conn)
        return [None] * len(items)

    return Batcher("deskbell-group-commit", commit=write, skip_ended=True, deadline=deadline)


class Ingest:
    """Stores new requests: grouped (`accept`) or in a transaction of their own (`accept_one`)."""

    def __init__(
        self, db: Database, now: Callable[[], datetime], *, timeout: float | None = None
    ) -> None:
        self.db = db
        self.rows = NewRows(db.writer.dialect)
        self.batcher = ingest_batcher(db, lambda: self.now(), timeout=timeout)
        self.now = now

    @property
    def deadline(self) -> Deadline:
        """Bounds each wait for a commit (`storage/deadline.py`)."""
        assert self.batcher.deadline is not None
        return self.batcher.deadline

    @property
    def batches(self) -> int:
        return self.batcher.batches

    @property
    def committed(self) -> int:
        return self.batcher.committed

    async def accept(
        self,
        payload: AssistanceRequestIn,
        targets: Sequence[Target],
        trace: RequestTrace = NO_TRACE,
        *,
        source: str | None = None,
        callback_url: str | None = None,
    ) -> Receipt:
        """Store one request with the next group; returns once it is committed. Raises
        IngestTimeout past the deadline (the request may still be stored). `source` and
        `callback_url` are stored with it (SPEC §9: where the bot hears about it)."""
        new = NewRequest.of(payload, targets, trace, source=source, callback_url=callback_url)
        await self.batcher.submit(new)
        return new.receipt()

    async def accept_one(
        self,
        payload: AssistanceRequestIn,
        targets: Sequence[Target],
        now: datetime,
        *,
        idempotency_key: str | None = None,
        body_hash: str | None = None,
        trace: RequestTrace = NO_TRACE,
        source: str | None = None,
        callback_url: str | None = None,
    ) -> tuple[Receipt, bool]:
        """Commit a request and one pending delivery per target in a transaction of its own.

        Returns (receipt, created). With an Idempotency-Key seen in the last 24 h and the same
        body, returns the first request's receipt and creates nothing; a different body raises
        IdempotencyConflict."""
        new = NewRequest.of(
            payload,
            targets,
            trace,
            idempotency_key=idempotency_key,
            body_hash=body_hash,
            source=source,
            callback_url=callback_url,
        )
        for last_try in (False, True):
            try:
                async with self.db.writer.begin() as conn:
                    if idempotency_key is not None:
                        existing = await _by_idempotency_key(conn, idempotency_key, now)
                        if existing is not None:
                            if existing.body_hash != body_hash:
                                raise IdempotencyConflict(idempotency_key)
                            return await _receipt(conn, existing.id, existing.topic), False
                    await self.rows.insert(conn, [new], now)
                    await notify_due(conn)
                    return new.receipt(), True
            except IntegrityError:
                # Another node committed the same key between our check and insert: answer as
                # a repeat.
                if idempotency_key is None or last_try:
                    raise
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        """Commit what is waiting, then stop the writer."""
        await self.batcher.aclose()


async def _by_idempotency_key(conn: AsyncConnection, key: str, now: datetime) -> Any | None:
    row = (
        await conn.execute(
            sa.select(
                requests.c.id, requests.c.topic, requests.c.body_hash, requests.c.created_at
            ).where(requests.c.idempotency_key == key)
        )
    ).first()
    if row is None:
        return None
    if now - row.created_at > IDEMPOTENCY_WINDOW:
        # Expired: free the key for this new request, keep the old request itself.
        await conn.execute(
            requests.update().where(requests.c.id == row.id).values(idempotency_key=None)
        )
        return None
    return row


async def _receipt(conn: AsyncConnection, request_id: str, topic: str) -> Receipt:
    rows = await conn.execute(
        sa.select(deliveries.c.id, deliveries.c.channel, deliveries.c.status)
        # The route's notifications, as the first 202 listed: not its escalations or events.
        .where(deliveries.c.request_id == request_id, deliveries.c.kind.is_(None))
        .order_by(deliveries.c.id)
    )
    found = tuple(DeliveryReceipt(r.id, r.channel, DeliveryStatus(r.status)) for r in rows)
    return Receipt(request_id, topic, found)
