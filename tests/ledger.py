"""Reads tests make of the delivery ledger that the service itself never needs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from deskbell.models import AttemptResult, Claimed, DeliveryStatus, Outcome
from deskbell.storage.engine import Database
from deskbell.storage.ids import parse_id
from deskbell.storage.store import Storage
from deskbell.storage.tables import attempts, deliveries


@dataclass(frozen=True, slots=True)
class Attempt:
    """One row of the attempts table (the service writes them; only tests read them back)."""

    delivery_id: str
    number: int
    started_at: datetime
    duration_ms: float
    outcome: Outcome
    error: str | None
    worker: str | None = None


def _database(source: Database | Storage) -> Database:
    """A Database, or that of anything holding one (a Storage, a test's gated stand-in)."""
    return source if isinstance(source, Database) else source.db


async def attempts_of(source: Database | Storage, delivery_id: str) -> list[Attempt]:
    """A delivery's attempt rows, in order."""
    db = _database(source)
    key = parse_id(delivery_id)
    if key is None:
        return []
    async with db.reader.connect() as conn:
        result = await conn.execute(
            sa.select(attempts).where(attempts.c.delivery_id == key).order_by(attempts.c.number)
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


async def delivery_counts(source: Database | Storage) -> dict[tuple[str, DeliveryStatus], int]:
    """(channel, status) -> number of deliveries."""
    db = _database(source)
    async with db.reader.connect() as conn:
        result = await conn.execute(
            sa.select(deliveries.c.channel, deliveries.c.status, sa.func.count()).group_by(
                deliveries.c.channel, deliveries.c.status
            )
        )
        return {(r[0], DeliveryStatus(r[1])): int(r[2]) for r in result}


async def record_attempt(store: Storage, claimed: Claimed, result: AttemptResult) -> bool:
    """One result in a transaction of its own (the worker batches them)."""
    (kept,) = await store.attempts.record_attempts([(claimed, result)])
    return kept
