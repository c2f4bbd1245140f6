"""Reading requests back: one by id, or a filtered newest-first page, and a delivery by id.
Each is one statement, and stored payloads are built without validating them again (they were
validated when accepted). A request comes with its handoff (SPEC §9): its columns are read
with the request, its escalations are among the deliveries already read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime
from operator import attrgetter
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from deskbell.errors import DeskbellError
from deskbell.models import (
    AssistanceRequestIn,
    Delivery,
    DeliveryStatus,
    Handoff,
    HandoffState,
    StoredRequest,
)
from deskbell.storage.engine import Database
from deskbell.storage.handoff import escalation_of
from deskbell.storage.ids import parse_id
from deskbell.storage.tables import deliveries, requests


class InvalidCursor(DeskbellError):
    """A list cursor that no page handed out: it must be a request id."""


class RequestReads:
    """Reads of requests and deliveries, on the reader engine."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def ping(self) -> None:
        """Raises when the database cannot answer a read."""
        async with self.db.reader.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        """The delivery, or None; a value that is not an id (a UUID) names none."""
        key = parse_id(delivery_id)
        if key is None:
            return None
        async with self.db.reader.connect() as conn:
            row = (await conn.execute(sa.select(deliveries).where(deliveries.c.id == key))).first()
        return None if row is None else delivery_from_row(row)

    async def get_request(self, request_id: str) -> StoredRequest | None:
        """The request, or None; a value that is not an id (a UUID) names none."""
        key = parse_id(request_id)
        if key is None:
            return None
        async with self.db.reader.connect() as conn:
            return await self._load(conn, key)

    @staticmethod
    async def _load(conn: AsyncConnection, request_id: str) -> StoredRequest | None:
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
        handoff: HandoffState | None = None,
    ) -> tuple[list[StoredRequest], str | None]:
        """Newest first. The cursor is the last id of the previous page: ids are time-ordered,
        so paging is stable while new requests arrive. `status` keeps requests that have at
        least one delivery in that status.

        Each filter walks an index in id order from the cursor and stops once the page is full
        (migration 0004): `ix_requests_topic_id` for a topic, `ix_deliveries_status_request_id`
        for a status, `ix_requests_handoff_state_id` for a `handoff` state (migration 0007).
        Scanning `requests` newest first and testing each row instead reads the
        whole table when few rows match (1M rows: seconds for `status=in_flight`).

        The page's ids are a subquery of the one statement that reads the requests with their
        deliveries: every statement through aiosqlite costs several hops between the event
        loop and its thread, more CPU than reading the rows.

        A cursor that is not an id raises InvalidCursor: ignoring it would answer page one as
        if it were the next."""
        if cursor is not None:
            cursor = parse_id(cursor)
            if cursor is None:
                raise InvalidCursor("the cursor is not one this list handed out")
        if status is None:
            page_ids = (
                sa.select(requests.c.id)
                .where(*self._request_filters(topic, since, handoff))
                .order_by(requests.c.id.desc())
                .limit(limit + 1)
            )
            if cursor is not None:
                page_ids = page_ids.where(requests.c.id < cursor)
        else:
            page_ids = self._ids_with_status(status, topic, since, cursor, limit + 1, handoff)
        # correlate(None): the subquery reads its own `requests` and `deliveries`, not the
        # rows of the outer join.
        query = _with_deliveries(requests.c.id.in_(page_ids.correlate(None)))
        async with self.db.reader.connect() as conn:
            found = _grouped(await conn.execute(query))
        items = found[:limit]
        next_cursor = items[-1].id if len(found) > limit else None
        return items, next_cursor

    @staticmethod
    def _request_filters(
        topic: str | None, since: datetime | None, handoff: HandoffState | None = None
    ) -> list[sa.ColumnElement[bool]]:
        found: list[sa.ColumnElement[bool]] = []
        if handoff is not None:
            found.append(requests.c.handoff_state == handoff.value)
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
        handoff: HandoffState | None = None,
    ) -> sa.Select[tuple[str]]:
        """Up to `limit` ids of requests with a delivery in `status`, newest first, read
        backwards along (status, request_id) from the cursor; once each (GROUP BY), though a
        request may have several deliveries in that status."""
        request_id = deliveries.c.request_id
        query = sa.select(request_id).where(deliveries.c.status == status.value)
        if cursor is not None:
            query = query.where(request_id < cursor)
        filters = cls._request_filters(topic, since, handoff)
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
    requests.c.handoff_state,
    requests.c.claimed_by,
    requests.c.claimed_at,
    requests.c.claimed_via,
    requests.c.resolved_by,
    requests.c.resolved_at,
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
    deliveries.c.kind,
    deliveries.c.step,
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
                handoff=_handoff(row),
            )
            found.append(current)
        if row.id is not None:
            current.deliveries.append(delivery_from_row(row))
    for index, stored in enumerate(found):
        if len(stored.deliveries) > 1:
            stored.deliveries.sort(key=attrgetter("id"))
        escalations = [escalation_of(d) for d in stored.deliveries if d.kind == "escalation"]
        if escalations:
            escalations.sort(key=attrgetter("step", "delivery_id"))
            handoff = replace(stored.handoff or Handoff(), escalations=tuple(escalations))
            found[index] = replace(stored, handoff=handoff)
    return found


def _handoff(row: Any) -> Handoff:
    """The handoff columns of a read row (`_READ_COLUMNS`), escalations added by `_grouped`."""
    return Handoff(
        state=HandoffState(row.handoff_state),
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        via=row.claimed_via,
        resolved_by=row.resolved_by,
        resolved_at=row.resolved_at,
    )


def delivery_from_row(row: Any) -> Delivery:
    return Delivery(
        id=row.id,
        request_id=row.request_id,
        channel=row.channel,
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        sent_at=row.sent_at,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        fallback_of=row.fallback_of,
        kind=row.kind,
        step=row.step,
    )
