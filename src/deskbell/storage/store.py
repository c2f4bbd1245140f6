"""Store: every query deskbell makes. Nothing above this package writes SQL.

This module holds ingest; the reads of requests are `storage/reads.py` and the work queue
(claim, lease, attempts, replay) is `storage/queue.py`, both inherited, so callers see one
object.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from deskbell.errors import IdempotencyConflict
from deskbell.models import (
    AssistanceRequestIn,
    Delivery,
    DeliveryStatus,
    StoredRequest,
)
from deskbell.routing.router import Target
from deskbell.storage.engine import Database
from deskbell.storage.queue import DeliveryQueue, notify_due
from deskbell.storage.reads import RequestReads
from deskbell.storage.records import (
    NO_TRACE,
    AttemptResult,
    Claimed,
    RequestTrace,
    new_id,
)
from deskbell.storage.tables import deliveries, requests

IDEMPOTENCY_WINDOW = timedelta(hours=24)

__all__ = ["AttemptResult", "Claimed", "Store", "new_id"]


class Store(DeliveryQueue, RequestReads):
    def __init__(self, db: Database) -> None:
        self.db = db

    async def ping(self) -> None:
        async with self.db.reader.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # ---- ingest -------------------------------------------------------------------------

    async def accept(
        self,
        payload: AssistanceRequestIn,
        targets: Sequence[Target],
        now: datetime,
        *,
        idempotency_key: str | None = None,
        body_hash: str | None = None,
        trace: RequestTrace = NO_TRACE,
        _repeat: bool = False,
    ) -> tuple[StoredRequest, bool]:
        """Commit a request and one pending delivery per target in one transaction.

        Returns (request, created). With an Idempotency-Key seen in the last 24 h and the same
        body, returns the first request and creates nothing; a different body raises
        IdempotencyConflict.
        """
        try:
            async with self.db.writer.begin() as conn:
                if idempotency_key is not None:
                    existing = await self._by_idempotency_key(conn, idempotency_key, now)
                    if existing is not None:
                        if existing.body_hash != body_hash:
                            raise IdempotencyConflict(idempotency_key)
                        found = await self._load(conn, existing.id)
                        assert found is not None
                        return found, False
                stored = await self._insert(
                    conn, payload, targets, now, idempotency_key, body_hash, trace
                )
                await notify_due(conn)
                return stored, True
        except IntegrityError:
            if idempotency_key is None or _repeat:
                raise
            # Another node committed the same key between our check and insert: answer as a repeat.
            return await self.accept(
                payload,
                targets,
                now,
                idempotency_key=idempotency_key,
                body_hash=body_hash,
                trace=trace,
                _repeat=True,
            )

    async def _by_idempotency_key(
        self, conn: AsyncConnection, key: str, now: datetime
    ) -> Any | None:
        row = (
            await conn.execute(
                sa.select(requests.c.id, requests.c.body_hash, requests.c.created_at).where(
                    requests.c.idempotency_key == key
                )
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

    async def _insert(
        self,
        conn: AsyncConnection,
        payload: AssistanceRequestIn,
        targets: Sequence[Target],
        now: datetime,
        idempotency_key: str | None,
        body_hash: str | None,
        trace: RequestTrace = NO_TRACE,
    ) -> StoredRequest:
        request_row, delivery_rows, stored = self._rows(
            payload, targets, now, idempotency_key, body_hash, trace
        )
        await conn.execute(requests.insert(), [request_row])
        if delivery_rows:
            await conn.execute(deliveries.insert(), delivery_rows)
        return stored

    @staticmethod
    def _rows(
        payload: AssistanceRequestIn,
        targets: Sequence[Target],
        now: datetime,
        idempotency_key: str | None,
        body_hash: str | None,
        trace: RequestTrace = NO_TRACE,
    ) -> tuple[dict[str, Any], list[dict[str, Any]], StoredRequest]:
        """The rows of one new request and its deliveries, and what the caller gets back."""
        request_id = new_id()
        request_row = {
            "id": request_id,
            "topic": payload.topic,
            "payload": payload.model_dump(mode="json", exclude_none=True),
            "created_at": now,
            "idempotency_key": idempotency_key,
            "body_hash": body_hash,
            "http_request_id": trace.http_request_id,
            "traceparent": trace.traceparent,
        }
        created = [
            Delivery(
                id=new_id(),
                request_id=request_id,
                channel=target.channel,
                status=DeliveryStatus.PENDING,
                attempts=0,
                created_at=now,
                next_attempt_at=now,
                last_error=None,
                sent_at=None,
            )
            for target in targets
        ]
        delivery_rows = [
            {
                "id": d.id,
                "request_id": request_id,
                "channel": d.channel,
                "status": d.status.value,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "next_attempt_at": now,
                "fallback_channel": target.fallback,
            }
            for d, target in zip(created, targets, strict=True)
        ]
        stored = StoredRequest(id=request_id, created_at=now, payload=payload, deliveries=created)
        return request_row, delivery_rows, stored
