"""The work queue half of the Store: claiming due deliveries under a lease, renewing leases,
recording attempts, releasing on a graceful stop, and replaying dead deliveries.

Every status change of a delivery happens here, in one transaction, guarded by the lease: an
update names the lease owner and the attempt count it expects, so a worker whose lease expired
and was taken over cannot overwrite the new owner's result. On PostgreSQL, a change that makes
work due sends NOTIFY in the same transaction, so listening workers wake at the commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from deskbell.errors import InvalidState, NotFound
from deskbell.models import AssistanceRequestIn, Attempt, Delivery, DeliveryStatus, Outcome
from deskbell.storage.engine import Database
from deskbell.storage.records import (
    AttemptResult,
    Claimed,
    RequestTrace,
    delivery_from_row,
    new_id,
)
from deskbell.storage.tables import attempts, deliveries, requests

NOTIFY_CHANNEL = "deskbell_due"
_DUE = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


async def notify_due(conn: AsyncConnection) -> None:
    """Wake listening workers when this transaction commits (PostgreSQL; no-op on SQLite)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, "")))


def _candidates(
    due: sa.ColumnElement[bool], limit: int, room: Mapping[str, int] | None
) -> sa.Select[Any]:
    """Ids to claim, locked with SKIP LOCKED on PostgreSQL (SQLite has one writer anyway).

    With per-channel room, a window ranks each channel's due rows so no channel gets more than
    its room; PostgreSQL refuses FOR UPDATE beside a window, so the lock is taken on an outer
    select of those ids.
    """
    if room is None:
        return (
            sa.select(deliveries.c.id)
            .where(due)
            .order_by(deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    blocked = [channel for channel, n in room.items() if n <= 0]
    rank = (
        sa.func.row_number()
        .over(partition_by=deliveries.c.channel, order_by=deliveries.c.next_attempt_at)
        .label("rank")
    )
    ranked = (
        sa.select(deliveries.c.id, deliveries.c.channel, deliveries.c.next_attempt_at, rank)
        .where(due, deliveries.c.channel.not_in(blocked))
        .subquery()
    )
    caps = {channel: n for channel, n in room.items() if n > 0}
    cap = sa.case(caps, value=ranked.c.channel, else_=limit) if caps else sa.literal(limit)
    chosen = (
        sa.select(ranked.c.id)
        .where(ranked.c.rank <= cap)
        .order_by(ranked.c.next_attempt_at)
        .limit(limit)
    )
    # `due` again on the locking select: PostgreSQL re-checks only this WHERE against the
    # newest row version, so a row another worker claimed meanwhile is not claimed twice.
    return (
        sa.select(deliveries.c.id)
        .where(deliveries.c.id.in_(chosen), due)
        .with_for_update(skip_locked=True)
    )


class DeliveryQueue:
    """Queries on deliveries and attempts; `Store` inherits them."""

    db: Database

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        async with self.db.reader.connect() as conn:
            row = (
                await conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id))
            ).first()
        return None if row is None else delivery_from_row(row)

    async def attempts_of(self, delivery_id: str) -> list[Attempt]:
        async with self.db.reader.connect() as conn:
            result = await conn.execute(
                sa.select(attempts)
                .where(attempts.c.delivery_id == delivery_id)
                .order_by(attempts.c.number)
            )
            return [
                Attempt(
                    delivery_id=r.delivery_id,
                    number=r.number,
                    started_at=r.started_at,
                    duration_ms=r.duration_ms,
                    outcome=Outcome(r.outcome),
                    error=r.error,
                    worker=r.worker,
                )
                for r in result
            ]

    # ---- the work queue -----------------------------------------------------------------

    async def claim(
        self,
        owner: str,
        now: datetime,
        *,
        lease: timedelta,
        limit: int,
        room: Mapping[str, int] | None = None,
    ) -> list[Claimed]:
        """Take up to `limit` due deliveries under a lease: pending or retrying ones whose time
        has come, and in-flight ones whose owner's lease expired (a crashed worker's).

        `room` caps how many of each named channel may be taken (0: none, e.g. a channel whose
        breaker is open); channels it does not name are capped only by `limit`, so deliveries
        for a channel no longer configured still get claimed and settled.
        """
        due = sa.or_(
            sa.and_(deliveries.c.status.in_(_DUE), deliveries.c.next_attempt_at <= now),
            sa.and_(
                deliveries.c.status == DeliveryStatus.IN_FLIGHT.value,
                deliveries.c.lease_expires_at < now,
            ),
        )
        async with self.db.writer.begin() as conn:
            ids = list((await conn.execute(_candidates(due, limit, room))).scalars())
            if not ids:
                return []
            claimed = await conn.execute(
                deliveries.update()
                .where(deliveries.c.id.in_(ids))
                .values(
                    status=DeliveryStatus.IN_FLIGHT.value,
                    lease_owner=owner,
                    lease_expires_at=now + lease,
                    attempts=deliveries.c.attempts + 1,
                    updated_at=now,
                )
                .returning(*deliveries.c)
            )
            held = [delivery_from_row(r) for r in claimed]
            payloads = await conn.execute(
                sa.select(
                    requests.c.id,
                    requests.c.payload,
                    requests.c.created_at,
                    requests.c.http_request_id,
                    requests.c.traceparent,
                ).where(requests.c.id.in_({d.request_id for d in held}))
            )
            by_id = {r.id: r for r in payloads}
        return [
            Claimed(
                delivery=d,
                request=AssistanceRequestIn.model_validate(by_id[d.request_id].payload),
                accepted_at=by_id[d.request_id].created_at,
                lease_owner=owner,
                trace=RequestTrace(
                    by_id[d.request_id].http_request_id, by_id[d.request_id].traceparent
                ),
            )
            for d in held
        ]

    async def renew(
        self, owner: str, delivery_ids: Sequence[str], now: datetime, *, lease: timedelta
    ) -> set[str]:
        """Extend the leases `owner` still holds; returns the ids it still holds."""
        if not delivery_ids:
            return set()
        async with self.db.writer.begin() as conn:
            result = await conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.id.in_(delivery_ids),
                    deliveries.c.lease_owner == owner,
                    deliveries.c.status == DeliveryStatus.IN_FLIGHT.value,
                )
                .values(lease_expires_at=now + lease)
                .returning(deliveries.c.id)
            )
            return set(result.scalars())

    async def record_attempt(self, claimed: Claimed, result: AttemptResult) -> bool:
        """Record the attempt and the delivery's new status, if we still hold the lease.

        Returns False (and changes nothing) when the lease was lost to another worker. A
        delivery that goes dead with a fallback channel gets a new linked delivery, in the
        same transaction.
        """
        d = claimed.delivery
        async with self.db.writer.begin() as conn:
            updated = await conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.id == d.id,
                    deliveries.c.lease_owner == claimed.lease_owner,
                    deliveries.c.status == DeliveryStatus.IN_FLIGHT.value,
                    deliveries.c.attempts == d.attempts,
                )
                .values(
                    status=result.status.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    next_attempt_at=result.next_attempt_at,
                    last_error=result.error,
                    sent_at=result.finished_at if result.status is DeliveryStatus.SENT else None,
                    updated_at=result.finished_at,
                )
                .returning(deliveries.c.fallback_channel)
            )
            row = updated.first()
            if row is None:
                return False
            await conn.execute(
                attempts.insert().values(
                    delivery_id=d.id,
                    number=d.attempts,
                    started_at=result.started_at,
                    duration_ms=(result.finished_at - result.started_at).total_seconds() * 1000,
                    outcome=result.outcome.value,
                    error=result.error,
                    worker=claimed.lease_owner,
                )
            )
            if result.status is DeliveryStatus.DEAD and row.fallback_channel:
                await self._add_fallback(conn, d, row.fallback_channel, result.finished_at)
        return True

    async def _add_fallback(
        self, conn: AsyncConnection, dead: Delivery, channel: str, now: datetime
    ) -> None:
        await conn.execute(
            deliveries.insert().values(
                id=new_id(),
                request_id=dead.request_id,
                channel=channel,
                status=DeliveryStatus.PENDING.value,
                attempts=0,
                created_at=now,
                updated_at=now,
                next_attempt_at=now,
                fallback_channel=None,
                fallback_of=dead.id,
            )
        )
        await notify_due(conn)

    async def release(self, claimed: Claimed, now: datetime) -> bool:
        """Give a delivery back unsent (graceful stop): due now, the attempt not counted."""
        d = claimed.delivery
        async with self.db.writer.begin() as conn:
            result = await conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.id == d.id,
                    deliveries.c.lease_owner == claimed.lease_owner,
                    deliveries.c.status == DeliveryStatus.IN_FLIGHT.value,
                )
                .values(
                    status=(
                        DeliveryStatus.PENDING if d.attempts <= 1 else DeliveryStatus.RETRYING
                    ).value,
                    attempts=d.attempts - 1,
                    lease_owner=None,
                    lease_expires_at=None,
                    next_attempt_at=now,
                    updated_at=now,
                )
            )
            await notify_due(conn)
            return result.rowcount == 1

    async def retry_dead(self, delivery_id: str, now: datetime) -> Delivery:
        """Replay: a dead delivery goes back to pending, due now, with its attempts kept."""
        async with self.db.writer.begin() as conn:
            row = (
                await conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id))
            ).first()
            if row is None:
                raise NotFound(delivery_id)
            if row.status != DeliveryStatus.DEAD.value:
                raise InvalidState(f"delivery {delivery_id} is {row.status}, not dead")
            await conn.execute(
                deliveries.update()
                .where(deliveries.c.id == delivery_id)
                .values(status=DeliveryStatus.PENDING.value, next_attempt_at=now, updated_at=now)
            )
            await notify_due(conn)
        found = await self.get_delivery(delivery_id)
        assert found is not None
        return found

    async def delivery_counts(self) -> dict[tuple[str, DeliveryStatus], int]:
        """(channel, status) -> number of deliveries; cheap enough for a status page or gauge."""
        async with self.db.reader.connect() as conn:
            result = await conn.execute(
                sa.select(deliveries.c.channel, deliveries.c.status, sa.func.count()).group_by(
                    deliveries.c.channel, deliveries.c.status
                )
            )
            return {(r[0], DeliveryStatus(r[1])): int(r[2]) for r in result}

    async def next_due_at(self) -> datetime | None:
        """When the earliest waiting delivery becomes due, so an idle worker sleeps just enough."""
        async with self.db.reader.connect() as conn:
            result = await conn.execute(
                sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.status.in_(_DUE)
                )
            )
            value = result.scalar()
        return value if isinstance(value, datetime) else None

    async def backlog(self) -> dict[str, tuple[int, datetime]]:
        """channel -> (deliveries not settled yet, creation time of the oldest), for the
        `/metrics` gauges: one grouped read over the (status, next_attempt_at) index."""
        unsettled = (*_DUE, DeliveryStatus.IN_FLIGHT)
        async with self.db.reader.connect() as conn:
            result = await conn.execute(
                sa.select(
                    deliveries.c.channel, sa.func.count(), sa.func.min(deliveries.c.created_at)
                )
                .where(deliveries.c.status.in_([s.value for s in unsettled]))
                .group_by(deliveries.c.channel)
            )
            return {r[0]: (int(r[1]), r[2]) for r in result}
