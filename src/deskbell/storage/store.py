"""Store: every query deskbell makes. Nothing above this package writes SQL.

This module holds ingest and the reads of requests; the work queue (claim, lease, attempts,
replay) is `storage/queue.py`, which Store inherits, so callers see one object.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from operator import attrgetter
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
from deskbell.storage.records import (
    NO_TRACE,
    AttemptResult,
    Claimed,
    RequestTrace,
    delivery_from_row,
    new_id,
)
from deskbell.storage.tables import deliveries, requests

IDEMPOTENCY_WINDOW = timedelta(hours=24)

__all__ = ["AttemptResult", "Claimed", "Store", "new_id"]


class Store(DeliveryQueue):
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

    # ---- reads --------------------------------------------------------------------------

    async def get_request(self, request_id: str) -> StoredRequest | None:
        async with self.db.reader.connect() as conn:
            return await self._load(conn, request_id)

    async def _load(self, conn: AsyncConnection, request_id: str) -> StoredRequest | None:
        rows = await conn.execute(_with_deliveries(requests.c.id == request_id))
        found = _grouped(rows)
        return found[0] if found else None

    async def list_requests(
        self,
        *,
        topic: str | None = None,
        status: DeliveryStatus | None = None,
        since: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> tuple[list[StoredRequest], str | None]:
        """Newest first. The cursor is the last id of the previous page: ids are time-ordered,
        so paging is stable while new requests arrive. `status` keeps requests that have at
        least one delivery in that status.

        Each filter walks an index in id order from the cursor and stops once the page is full
        (migration 0004): `ix_requests_topic_id` for a topic, `ix_deliveries_status_request_id`
        for a status. Scanning `requests` newest first and testing each row instead reads the
        whole table when few rows match (1M rows: seconds for `status=in_flight`).

        The page's ids are a subquery of the one statement that reads the requests with their
        deliveries: every statement through aiosqlite costs several hops between the event
        loop and its thread, more CPU than reading the rows."""
        if status is None:
            page_ids = (
                sa.select(requests.c.id)
                .where(*self._request_filters(topic, since))
                .order_by(requests.c.id.desc())
                .limit(limit + 1)
            )
            if cursor is not None:
                page_ids = page_ids.where(requests.c.id < cursor)
        else:
            page_ids = self._ids_with_status(status, topic, since, cursor, limit + 1)
        # correlate(None): the subquery reads its own `requests` and `deliveries`, not the
        # rows of the outer join.
        query = _with_deliveries(requests.c.id.in_(page_ids.correlate(None)))
        async with self.db.reader.connect() as conn:
            found = _grouped(await conn.execute(query))
        items = found[:limit]
        next_cursor = items[-1].id if len(found) > limit else None
        return items, next_cursor

    @staticmethod
    def _request_filters(topic: str | None, since: datetime | None) -> list[sa.ColumnElement[bool]]:
        found: list[sa.ColumnElement[bool]] = []
        if topic is not None:
            found.append(requests.c.topic == topic)
        if since is not None:
            found.append(requests.c.created_at >= since)
        return found

    @classmethod
    def _ids_with_status(
        cls,
        status: DeliveryStatus,
        topic: str | None,
        since: datetime | None,
        cursor: str | None,
        limit: int,
    ) -> sa.Select[tuple[str]]:
        """Up to `limit` ids of requests with a delivery in `status`, newest first, read
        backwards along (status, request_id) from the cursor; once each (GROUP BY), though a
        request may have several deliveries in that status."""
        request_id = deliveries.c.request_id
        query = sa.select(request_id).where(deliveries.c.status == status.value)
        if cursor is not None:
            query = query.where(request_id < cursor)
        filters = cls._request_filters(topic, since)
        if filters:
            query = query.join(requests, requests.c.id == request_id).where(*filters)
        return query.group_by(request_id).order_by(request_id.desc()).limit(limit)


# What a read of requests selects: the request's columns, labelled apart from the deliveries'
# own `id` and `created_at`, then those of its deliveries (one row each, LEFT JOIN: a request
# without deliveries has one row, of NULLs for them). Not `updated_at` nor `fallback_channel`,
# which `Delivery` does not carry: every datetime column is a conversion per row.
_READ_COLUMNS = (
    requests.c.id.label("request_key"),
    requests.c.created_at.label("accepted_at"),
    requests.c.payload,
    deliveries.c.id,
    deliveries.c.request_id,
    deliveries.c.channel,
    deliveries.c.status,
    deliveries.c.attempts,
    deliveries.c.created_at,
    deliveries.c.next_attempt_at,
    deliveries.c.last_error,
    deliveries.c.sent_at,
    deliveries.c.lease_owner,
    deliveries.c.lease_expires_at,
    deliveries.c.fallback_of,
)


def _with_deliveries(where: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """The requests matching `where`, newest first, each with its deliveries, in one
    statement. The deliveries are put in id order by `_grouped`: ordering by them here too
    would make SQLite sort the page in a temp B-tree instead of reading it in index order."""
    return (
        sa.select(*_READ_COLUMNS)
        .select_from(requests.outerjoin(deliveries, deliveries.c.request_id == requests.c.id))
        .where(where)
        .order_by(requests.c.id.desc())
    )


def _grouped(rows: Iterable[Any]) -> list[StoredRequest]:
    """The rows of `_with_deliveries` as one StoredRequest each, deliveries in id order.

    The payload is built without validating it again (`AssistanceRequestIn.from_stored`): it
    was validated, and stored as that model's dump, when it was accepted."""
    found: list[StoredRequest] = []
    current: StoredRequest | None = None
    for row in rows:
        if current is None or current.id != row.request_key:
            current = StoredRequest(
                id=row.request_key,
                created_at=row.accepted_at,
                payload=AssistanceRequestIn.from_stored(row.payload),
                deliveries=[],
            )
            found.append(current)
        if row.id is not None:
            current.deliveries.append(delivery_from_row(row))
    for stored in found:
        if len(stored.deliveries) > 1:
            stored.deliveries.sort(key=attrgetter("id"))
    return found
