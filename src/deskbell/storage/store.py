"""Store: every query deskbell makes. Nothing above this module writes SQL.

Every status change of a delivery happens here, in one transaction, guarded by the lease: an
update names the lease owner it expects, so a worker whose lease expired and was taken over
cannot overwrite the new owner's result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import uuid_utils
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from deskbell.errors import IdempotencyConflict, InvalidState, NotFound
from deskbell.models import (
    AssistanceRequestIn,
    Attempt,
    Delivery,
    DeliveryStatus,
    Outcome,
    StoredRequest,
)
from deskbell.routing.router import Target
from deskbell.storage.engine import Database
from deskbell.storage.tables import attempts, deliveries, requests

IDEMPOTENCY_WINDOW = timedelta(hours=24)
_DUE = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


def new_id() -> str:
    """UUIDv7: time-ordered, so inserts append to the index instead of scattering."""
    return str(uuid_utils.uuid7())


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker now holds, with what it needs to send it."""

    delivery: Delivery
    request: AssistanceRequestIn
    accepted_at: datetime
    lease_owner: str


@dataclass(frozen=True)
class AttemptResult:
    """What the worker decided after one attempt; the Store only records it."""

    outcome: Outcome
    status: DeliveryStatus
    started_at: datetime
    finished_at: datetime
    error: str | None = None
    next_attempt_at: datetime | None = None


def _delivery(row: Any) -> Delivery:
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
    )


class Store:
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
                stored = await self._insert(conn, payload, targets, now, idempotency_key, body_hash)
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
    ) -> StoredRequest:
        request_id = new_id()
        await conn.execute(
            requests.insert().values(
                id=request_id,
                topic=payload.topic,
                payload=payload.model_dump(mode="json", exclude_none=True),
                created_at=now,
                idempotency_key=idempotency_key,
                body_hash=body_hash,
            )
        )
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
        if created:
            await conn.execute(
                deliveries.insert(),
                [
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
                ],
            )
        return StoredRequest(id=request_id, created_at=now, payload=payload, deliveries=created)

    # ---- reads --------------------------------------------------------------------------

    async def get_request(self, request_id: str) -> StoredRequest | None:
        async with self.db.reader.connect() as conn:
            return await self._load(conn, request_id)

    async def _load(self, conn: AsyncConnection, request_id: str) -> StoredRequest | None:
        row = (await conn.execute(sa.select(requests).where(requests.c.id == request_id))).first()
        if row is None:
            return None
        found = await self._deliveries_of(conn, [request_id])
        return self._stored(row, found.get(request_id, []))

    @staticmethod
    def _stored(row: Any, items: list[Delivery]) -> StoredRequest:
        return StoredRequest(
            id=row.id,
            created_at=row.created_at,
            payload=AssistanceRequestIn.model_validate(row.payload),
            deliveries=items,
        )

    async def _deliveries_of(
        self, conn: AsyncConnection, request_ids: Sequence[str]
    ) -> dict[str, list[Delivery]]:
        result = await conn.execute(
            sa.select(deliveries)
            .where(deliveries.c.request_id.in_(request_ids))
            .order_by(deliveries.c.id)
        )
        grouped: dict[str, list[Delivery]] = {}
        for row in result:
            grouped.setdefault(row.request_id, []).append(_delivery(row))
        return grouped

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
        least one delivery in that status."""
        query = sa.select(requests).order_by(requests.c.id.desc()).limit(limit + 1)
        if topic is not None:
            query = query.where(requests.c.topic == topic)
        if since is not None:
            query = query.where(requests.c.created_at >= since)
        if cursor is not None:
            query = query.where(requests.c.id < cursor)
        if status is not None:
            query = query.where(
                sa.exists().where(
                    deliveries.c.request_id == requests.c.id, deliveries.c.status == status.value
                )
            )
        async with self.db.reader.connect() as conn:
            rows = list(await conn.execute(query))
            page = rows[:limit]
            found = await self._deliveries_of(conn, [r.id for r in page])
        items = [self._stored(r, found.get(r.id, [])) for r in page]
        next_cursor = page[-1].id if len(rows) > limit else None
        return items, next_cursor

    async def get_delivery(self, delivery_id: str) -> Delivery | None:
        async with self.db.reader.connect() as conn:
            row = (
                await conn.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id))
            ).first()
        return None if row is None else _delivery(row)

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
        self, owner: str, now: datetime, *, lease: timedelta, limit: int
    ) -> list[Claimed]:
        """Take up to `limit` due deliveries under a lease: pending or retrying ones whose time
        has come, and in-flight ones whose owner's lease expired (a crashed worker's)."""
        due = sa.or_(
            sa.and_(deliveries.c.status.in_(_DUE), deliveries.c.next_attempt_at <= now),
            sa.and_(
                deliveries.c.status == DeliveryStatus.IN_FLIGHT.value,
                deliveries.c.lease_expires_at < now,
            ),
        )
        candidates = (
            sa.select(deliveries.c.id)
            .where(due)
            .order_by(deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with self.db.writer.begin() as conn:
            ids = list((await conn.execute(candidates)).scalars())
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
            held = [_delivery(r) for r in claimed]
            payloads = await conn.execute(
                sa.select(requests.c.id, requests.c.payload, requests.c.created_at).where(
                    requests.c.id.in_({d.request_id for d in held})
                )
            )
            by_id = {r.id: r for r in payloads}
        return [
            Claimed(
                delivery=d,
                request=AssistanceRequestIn.model_validate(by_id[d.request_id].payload),
                accepted_at=by_id[d.request_id].created_at,
                lease_owner=owner,
            )
            for d in held
        ]

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
        found = await self.get_delivery(delivery_id)
        assert found is not None
        return found

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
