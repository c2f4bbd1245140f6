"""Deliveries across requests (SPEC §2): the dead-letter view, the replay of every matching
dead delivery at once, and the attempt rows of one request.

`DeliveryLedger` is stateless over a `Database`; the API route and the dashboard build it per
use. The bulk replay is `DeliveryQueue.retry_dead` for many rows in one UPDATE: the same
columns change (pending, due now, `replay_base` = attempts so far), so a fallback already sent
is not sent again (storage/attempts.py reads `replayed_at`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from deskbell.errors import DeskbellError
from deskbell.models import Delivery, DeliveryStatus
from deskbell.storage.engine import Database, notify_due
from deskbell.storage.ids import parse_id
from deskbell.storage.reads import delivery_from_row
from deskbell.storage.tables import attempts, deliveries


class InvalidDeliveryCursor(DeskbellError):
    """A cursor that no page of deliveries handed out: it must be a delivery id."""


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """Which deliveries: each field given narrows the set (`until` is exclusive)."""

    status: DeliveryStatus | None = None
    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        found: list[sa.ColumnElement[bool]] = []
        if self.status is not None:
            found.append(deliveries.c.status == self.status.value)
        if self.channel is not None:
            found.append(deliveries.c.channel == self.channel)
        if self.since is not None:
            found.append(deliveries.c.created_at >= self.since)
        if self.until is not None:
            found.append(deliveries.c.created_at < self.until)
        return found


@dataclass(frozen=True, slots=True)
class AttemptRow:
    delivery_id: str
    number: int
    started_at: datetime
    duration_ms: float
    outcome: str
    error: str | None
    worker: str | None


class DeliveryLedger:
    """Reads on the reader engine; the replay on the writer (one transaction)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_deliveries(
        self, where: DeliveryFilter, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Delivery], str | None]:
        """Newest first (delivery ids are time-ordered); the cursor is the previous page's
        last id."""
        query = sa.select(*deliveries.c).where(*where.where())
        if cursor is not None:
            key = parse_id(cursor)
            if key is None:
                raise InvalidDeliveryCursor("the cursor is not one this list handed out")
            query = query.where(deliveries.c.id < key)
        query = query.order_by(deliveries.c.id.desc()).limit(limit + 1)
        async with self.db.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        items = [delivery_from_row(r) for r in rows[:limit]]
        return items, (items[-1].id if len(rows) > limit else None)

    async def count(self, where: DeliveryFilter) -> int:
        query = sa.select(sa.func.count()).select_from(deliveries).where(*where.where())
        async with self.db.reader.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def retry_matching(self, where: DeliveryFilter, now: datetime) -> int:
        """Every dead delivery `where` matches back to pending, due now, with a fresh retry
        budget; returns how many. `where.status` is ignored: only dead ones are replayed."""
        matching = DeliveryFilter(DeliveryStatus.DEAD, where.channel, where.since, where.until)
        async with self.db.writer.begin() as conn:
            result = await conn.execute(
                deliveries.update()
                .where(*matching.where())
                .values(
                    status=DeliveryStatus.PENDING.value,
                    next_attempt_at=now,
                    updated_at=now,
                    replayed_at=now,
                    replay_base=deliveries.c.attempts,
                )
            )
            revived = int(result.rowcount or 0)
            if revived:
                await notify_due(conn)
        return revived

    async def attempts_of(self, request_id: str) -> list[AttemptRow]:
        """Every attempt of every delivery of the request, by delivery then number."""
        key = parse_id(request_id)
        if key is None:
            return []
        query = (
            sa.select(
                attempts.c.delivery_id,
                attempts.c.number,
                attempts.c.started_at,
                attempts.c.duration_ms,
                attempts.c.outcome,
                attempts.c.error,
                attempts.c.worker,
            )
            .join(deliveries, deliveries.c.id == attempts.c.delivery_id)
            .where(deliveries.c.request_id == key)
            .order_by(attempts.c.delivery_id, attempts.c.number)
        )
        async with self.db.reader.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [AttemptRow(*row) for row in rows]
