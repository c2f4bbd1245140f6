"""Writing attempt results: one delivery's or a whole batch's, in one transaction.

A commit costs a round trip and, on SQLite, an fsync whether it holds one result or hundreds,
so the worker hands results to a group committer (`delivery/recorder.py`) that calls
`record_attempts` with everything that finished while the previous commit ran.

Each result is still guarded by the lease: it is written only if the delivery is still
in flight, held by the worker that claimed it, at the attempt count it claimed. The batch
first reads which of its deliveries are still held, locking them on PostgreSQL (SQLite's
BEGIN IMMEDIATE holds the whole database), then writes the held ones with one `executemany`
per statement: the delivery updates, the attempt rows and, for deliveries going dead with a
fallback channel, the new fallback deliveries (one per delivery at most: a replayed delivery
that dies again does not send its fallback twice). Last, in the same transaction, the events
for the bot that these results raise (`request.notified`, `request.escalated`,
`request.failed`: storage/events.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from deskbell.models import AttemptResult, Claimed, Delivery, DeliveryStatus
from deskbell.storage.engine import Database, notify_due_in
from deskbell.storage.events import Settled, delivery_events
from deskbell.storage.rows import NewRows
from deskbell.storage.tables import attempts, deliveries

# One statement for every result of a batch; the WHERE repeats the lease guard that the
# locking read already checked, so no path can write a result for a lease it lost.
_RECORD = (
    deliveries.update()
    .where(
        deliveries.c.id == sa.bindparam("r_id"),
        deliveries.c.lease_owner == sa.bindparam("r_owner"),
        deliveries.c.status == DeliveryStatus.IN_FLIGHT.value,
        deliveries.c.attempts == sa.bindparam("r_attempts"),
    )
    .values(
        status=sa.bindparam("r_status"),
        lease_owner=None,
        lease_expires_at=None,
        next_attempt_at=sa.bindparam("r_next", type_=deliveries.c.next_attempt_at.type),
        last_error=sa.bindparam("r_error", type_=deliveries.c.last_error.type),
        sent_at=sa.bindparam("r_sent", type_=deliveries.c.sent_at.type),
        updated_at=sa.bindparam("r_updated", type_=deliveries.c.updated_at.type),
    )
)


_ATTEMPT = attempts.insert()


def _settled(claimed: Claimed, result: AttemptResult, row: Any) -> Settled:
    d = claimed.delivery
    return Settled(
        d.id,
        d.request_id,
        d.channel,
        row.kind,
        row.step,
        result.status,
        result.finished_at,
        claimed.has_callback,
    )


def _held(claimed: Claimed, row: Any) -> bool:
    return bool(
        row.lease_owner == claimed.lease_owner
        and row.status == DeliveryStatus.IN_FLIGHT.value
        and row.attempts == claimed.delivery.attempts
    )


class Attempts:
    """Records attempt results, a batch of them per transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.rows = NewRows(db.writer.dialect)

    async def record_attempts(self, items: Sequence[tuple[Claimed, AttemptResult]]) -> list[bool]:
        """Record each attempt and its delivery's new status, if the lease is still held; one
        flag per item, in order (False: the lease was lost, nothing of it written). A delivery
        that goes dead with a fallback channel gets a new linked delivery. The transaction is
        all or nothing: if it raises, nothing of it was written."""
        if not items:
            return []
        return await self.db.transact(_record, items, self.rows)


# The batch's locking read, built once (PostgreSQL locks in id order, so two transactions
# over overlapping rows cannot deadlock).
_HELD = sa.select(
    deliveries.c.id,
    deliveries.c.lease_owner,
    deliveries.c.status,
    deliveries.c.attempts,
    deliveries.c.fallback_channel,
    deliveries.c.kind,
    deliveries.c.step,
).where(deliveries.c.id.in_(sa.bindparam("ids", expanding=True, type_=deliveries.c.id.type)))
_HELD_LOCKED = _HELD.order_by(deliveries.c.id).with_for_update()


def _record(
    conn: sa.Connection, items: Sequence[tuple[Claimed, AttemptResult]], new_rows: NewRows
) -> list[bool]:
    """`Attempts.record_attempts`'s transaction (`Database.transact`)."""
    held = _HELD_LOCKED if conn.dialect.name == "postgresql" else _HELD
    found = conn.execute(held, {"ids": [claimed.delivery.id for claimed, _ in items]})
    rows = {row.id: row for row in found}
    kept: list[bool] = []
    written: list[tuple[Claimed, AttemptResult, str | None]] = []
    settled: list[Settled] = []
    for claimed, result in items:
        row = rows.pop(claimed.delivery.id, None)  # pop: a repeated id counts once
        ok = row is not None and _held(claimed, row)
        kept.append(ok)
        if row is not None and ok:
            written.append((claimed, result, row.fallback_channel))
            settled.append(_settled(claimed, result, row))
    if written:
        _write(conn, written, new_rows)
        # The bot's events (storage/events.py) in the same transaction: a result is never
        # committed without the event it raises, nor an event without it.
        delivery_events(conn, settled)
    return kept


def _write(
    conn: sa.Connection,
    written: Sequence[tuple[Claimed, AttemptResult, str | None]],
    rows: NewRows,
) -> None:
    """The held results of a batch: one executemany per statement."""
    conn.execute(
        _RECORD,
        [
            {
                "r_id": claimed.delivery.id,
                "r_owner": claimed.lease_owner,
                "r_attempts": claimed.delivery.attempts,
                "r_status": result.status.value,
                "r_next": result.next_attempt_at,
                "r_error": result.error,
                "r_sent": result.finished_at if result.status is DeliveryStatus.SENT else None,
                "r_updated": result.finished_at,
            }
            for claimed, result, _ in written
        ],
    )
    conn.execute(
        _ATTEMPT,
        [
            {
                "delivery_id": claimed.delivery.id,
                "number": claimed.delivery.attempts,
                "started_at": result.started_at,
                "duration_ms": (result.finished_at - result.started_at).total_seconds() * 1000,
                "outcome": result.outcome.value,
                "error": result.error,
                "worker": claimed.lease_owner,
            }
            for claimed, result, _ in written
        ],
    )
    dying = [
        (claimed, result, fallback)
        for claimed, result, fallback in written
        if result.status is DeliveryStatus.DEAD and fallback
    ]
    if not dying:
        return
    covered = _with_fallback(conn, [claimed.delivery for claimed, _, _ in dying])
    fallbacks = [
        (claimed.delivery.request_id, fallback, claimed.delivery.id, result.finished_at)
        for claimed, result, fallback in dying
        if claimed.delivery.id not in covered
    ]
    if fallbacks:
        rows.insert_fallbacks(conn, fallbacks)
        notify_due_in(conn)


def _with_fallback(conn: sa.Connection, dying: Sequence[Delivery]) -> set[str]:
    """Which of these deliveries already have their fallback delivery: a replayed delivery
    that goes dead again must not send its fallback a second time. At most one fallback
    delivery per delivery, whatever became of it (a dead one can be replayed itself). Found
    through the requests' deliveries (indexed by request), not a scan of `fallback_of`."""
    rows = conn.execute(
        sa.select(deliveries.c.fallback_of).where(
            deliveries.c.request_id.in_({d.request_id for d in dying}),
            deliveries.c.fallback_of.in_([d.id for d in dying]),
        )
    )
    return set(rows.scalars())
