"""The delivery queue: claiming due deliveries under a lease, renewing leases, giving them back
on a graceful stop, and replaying dead deliveries. Attempt results are `storage/attempts.py`.

Every status change of a delivery happens in one transaction, guarded by the lease: an
update names the lease owner (and where it matters the attempt count) it expects, so a worker
whose lease expired and was taken over cannot overwrite the new owner's result. On PostgreSQL,
a change that makes work due sends NOTIFY in the same transaction, so listening workers wake
at the commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from deskbell.errors import InvalidState, NotFound
from deskbell.models import (
    AssistanceRequestIn,
    Claimed,
    Delivery,
    DeliveryStatus,
    RequestTrace,
)
from deskbell.storage.claims import choose
from deskbell.storage.engine import Database, notify_due
from deskbell.storage.ids import parse_id
from deskbell.storage.reads import delivery_from_row
from deskbell.storage.tables import deliveries, requests

_DUE = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)
# The attempts the retry budget counts: those since the last replay.
_SINCE_REPLAY = deliveries.c.attempts - sa.func.coalesce(deliveries.c.replay_base, 0)


# A claim's statements, built once: each claim binds its ids, owner and times.
_IDS = sa.bindparam("ids", expanding=True, type_=deliveries.c.id.type)
_TAKE = (
    deliveries.update()
    .where(deliveries.c.id.in_(_IDS))
    .values(
        status=DeliveryStatus.IN_FLIGHT.value,
        lease_owner=sa.bindparam("owner", type_=deliveries.c.lease_owner.type),
        lease_expires_at=sa.bindparam("until", type_=deliveries.c.lease_expires_at.type),
        attempts=deliveries.c.attempts + 1,
        updated_at=sa.bindparam("now", type_=deliveries.c.updated_at.type),
    )
    .returning(*deliveries.c)
)
_PAYLOADS = sa.select(
    requests.c.id,
    requests.c.payload,
    requests.c.created_at,
    requests.c.http_request_id,
    requests.c.traceparent,
    requests.c.callback_url.is_not(None).label("has_callback"),
).where(requests.c.id.in_(sa.bindparam("request_ids", expanding=True, type_=requests.c.id.type)))


def _claim(
    conn: sa.Connection,
    owner: str,
    now: datetime,
    until: datetime,
    limit: int,
    room: Mapping[str, int] | None,
) -> list[Claimed]:
    """`DeliveryQueue.claim`'s transaction (`Database.transact`)."""
    ids = choose(conn, now, limit, room)
    if not ids:
        return []
    rows = conn.execute(_TAKE, {"ids": ids, "owner": owner, "until": until, "now": now}).all()
    held = [delivery_from_row(r) for r in rows]
    found = conn.execute(_PAYLOADS, {"request_ids": list({d.request_id for d in held})})
    by_id = {r.id: r for r in found}
    claimed = []
    for d, row in zip(held, rows, strict=True):
        request = by_id[d.request_id]
        claimed.append(
            Claimed(
                delivery=d,
                request=AssistanceRequestIn.from_stored(request.payload),
                accepted_at=request.created_at,
                lease_owner=owner,
                trace=RequestTrace(request.http_request_id, request.traceparent),
                replayed_at=row.replayed_at,
                replay_base=row.replay_base or 0,
                has_callback=bool(request.has_callback),
            )
        )
    return claimed


class DeliveryQueue:
    """The work queue over the deliveries table, on the writer engine (reads on the reader)."""

    def __init__(self, db: Database) -> None:
        self.db = db

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
        for a channel no longer configured still get claimed and settled. Which rows: see
        `storage/claims.py`.
        """
        return await self.db.transact(_claim, owner, now, now + lease, limit, room)

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

    async def release_many(self, items: Sequence[Claimed], now: datetime) -> int:
        """Give deliveries back unsent (graceful stop): due now, the attempt not counted.
        Returns how many were still ours (one whose result was committed meanwhile is not in
        flight any more, so stays as is)."""
        owners: dict[str, list[str]] = {}
        for claimed in items:
            owners.setdefault(claimed.lease_owner, []).append(claimed.delivery.id)
        released = 0
        async with self.db.writer.begin() as conn:
            for owner, ids in owners.items():
                result = await conn.execute(
                    deliveries.update()
                    .where(
                        deliveries.c.id.in_(ids),
                        deliveries.c.lease_owner == owner,
                        deliveries.c.status == DeliveryStatus.IN_FLIGHT.value,
                    )
                    .values(
                        status=sa.case(
                            (_SINCE_REPLAY <= 1, DeliveryStatus.PENDING.value),
                            else_=DeliveryStatus.RETRYING.value,
                        ),
                        attempts=deliveries.c.attempts - 1,
                        lease_owner=None,
                        lease_expires_at=None,
                        next_attempt_at=now,
                        updated_at=now,
                    )
                )
                released += result.rowcount
            if released:
                await notify_due(conn)
        return released

    async def retry_dead(self, delivery_id: str, now: datetime) -> Delivery:
        """Replay: a dead delivery goes back to pending, due now, with a fresh retry budget.

        Its attempts keep counting (they number its attempt rows), and `replay_base` records
        how many there were, so the retry policy counts attempts, and age, from now
        (`Claimed.budget_attempts`). The API route and `deskbell retry` both come here. A
        fallback this delivery already has is not sent again if it goes dead once more
        (`storage/attempts.py`)."""
        key = parse_id(delivery_id)
        if key is None:
            raise NotFound(delivery_id)
        async with self.db.writer.begin() as conn:
            revived = (
                await conn.execute(
                    deliveries.update()
                    .where(
                        deliveries.c.id == key,
                        deliveries.c.status == DeliveryStatus.DEAD.value,
                    )
                    .values(
                        status=DeliveryStatus.PENDING.value,
                        next_attempt_at=now,
                        updated_at=now,
                        replayed_at=now,
                        replay_base=deliveries.c.attempts,
                    )
                    .returning(*deliveries.c)
                )
            ).first()
            if revived is None:
                found = (
                    await conn.execute(sa.select(deliveries.c.status).where(deliveries.c.id == key))
                ).first()
                if found is None:
                    raise NotFound(delivery_id)
                raise InvalidState(f"delivery {key} is {found.status}, not dead")
            await notify_due(conn)
        return delivery_from_row(revived)

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
