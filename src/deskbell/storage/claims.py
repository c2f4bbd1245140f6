"""Which due deliveries a claim takes: the earliest due, at most `limit`, and no more of a
channel than its room (0 for a channel whose slots are full or whose breaker probes).

Ranking every due row per channel (a `row_number()` window) gives the exact answer, but it
reads and sorts the whole backlog on every claim: with thousands waiting, the claim cost more
than the sends it fed. So a claim first reads only the head of the queue, the earliest
`HEAD_ROWS_PER_SLOT * limit` due rows, one ordered index scan per status, and picks from those
in order, each channel up to its room. That is the exact answer whenever the head holds
enough (or is the whole queue); only when channels with little room crowd the head, and it
yields fewer than `limit`, does the claim rank every due row as before.

On PostgreSQL the rows are locked with `FOR UPDATE SKIP LOCKED` by the select that reads
them, and that select's WHERE holds the `due` condition: PostgreSQL re-checks only the
locking select's WHERE against the newest version of a row it locks, so a row another worker
claimed meanwhile is not claimed twice. (The ranking path repeats `due` on its outer locking
select for the same reason.)

The head's statement is built once, with bound parameters (`now`, the blocked channels, the
row count): building and keying it anew on every claim cost more than running it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from deskbell.models import DeliveryStatus
from deskbell.storage.tables import deliveries

HEAD_ROWS_PER_SLOT = 4
_DUE = (DeliveryStatus.PENDING, DeliveryStatus.RETRYING)


def due_condition(now: datetime) -> sa.ColumnElement[bool]:
    """Pending or retrying and their time has come, or in flight with an expired lease."""
    return sa.or_(
        sa.and_(deliveries.c.status.in_(_DUE), deliveries.c.next_attempt_at <= now),
        sa.and_(
            deliveries.c.status == DeliveryStatus.IN_FLIGHT.value,
            deliveries.c.lease_expires_at < now,
        ),
    )


def choose(
    conn: sa.Connection, now: datetime, limit: int, room: Mapping[str, int] | None
) -> list[str]:
    """The ids to claim, locked on PostgreSQL (SQLite's BEGIN IMMEDIATE holds the database)."""
    if room is None:
        return list(conn.execute(_earliest(due_condition(now), limit)).scalars())
    blocked = [channel for channel, n in room.items() if n <= 0]
    rows = HEAD_ROWS_PER_SLOT * limit
    head = conn.execute(_HEAD, {"now": now, "blocked": blocked, "rows": rows}).all()
    ids = _pick(head, limit, room)
    if len(ids) < limit and len(head) == rows:  # the head was not enough: rank every due row
        ranked = _ranked(due_condition(now), limit, room, blocked)
        return list(conn.execute(ranked).scalars())
    return ids


def _pick(head: Sequence[Any], limit: int, room: Mapping[str, int]) -> list[str]:
    taken: Counter[str] = Counter()
    ids: list[str] = []
    for row in head:
        if taken[row.channel] < room.get(row.channel, limit):
            taken[row.channel] += 1
            ids.append(row.id)
            if len(ids) == limit:
                break
    return ids


def _head() -> sa.Select[Any]:
    """The earliest `rows` due rows of channels not `blocked`: one ordered scan of the
    (status, next_attempt_at) index per status, so nothing past the head is read.

    On PostgreSQL each scan locks its rows, skipping those other workers hold (so workers
    claiming together take different rows); each scan's WHERE is its part of `due`, which
    PostgreSQL re-checks on the newest version of a row it locks. FOR UPDATE is not allowed
    on a UNION itself, only on the selects it reads from."""
    c = deliveries.c
    now = sa.bindparam("now", type_=c.next_attempt_at.type)
    blocked = sa.bindparam("blocked", expanding=True, type_=c.channel.type)
    rows = sa.bindparam("rows", type_=sa.Integer())
    conditions = [
        sa.and_(c.status == DeliveryStatus.PENDING.value, c.next_attempt_at <= now),
        sa.and_(c.status == DeliveryStatus.RETRYING.value, c.next_attempt_at <= now),
        sa.and_(c.status == DeliveryStatus.IN_FLIGHT.value, c.lease_expires_at < now),
    ]
    parts = [
        sa.select(c.id, c.channel, c.next_attempt_at)
        .where(condition, c.channel.not_in(blocked))
        .order_by(c.next_attempt_at)
        .limit(rows)
        .with_for_update(skip_locked=True)
        .subquery()
        for condition in conditions
    ]
    union = sa.union_all(*(sa.select(part) for part in parts)).subquery()
    return sa.select(union.c.id, union.c.channel).order_by(union.c.next_attempt_at).limit(rows)


_HEAD = _head()


def _earliest(due: sa.ColumnElement[bool], limit: int) -> sa.Select[Any]:
    return (
        sa.select(deliveries.c.id)
        .where(due)
        .order_by(deliveries.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


def _ranked(
    due: sa.ColumnElement[bool], limit: int, room: Mapping[str, int], blocked: Sequence[str]
) -> sa.Select[Any]:
    """The exact answer: a window ranks each channel's due rows. PostgreSQL refuses FOR
    UPDATE beside a window, so the lock is taken on an outer select of those ids."""
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
    return _locked(due, chosen)


def _locked(due: sa.ColumnElement[bool], ids: sa.Select[Any]) -> sa.Select[Any]:
    # `due` again on the locking select: see the module docstring.
    return (
        sa.select(deliveries.c.id)
        .where(deliveries.c.id.in_(ids), due)
        .with_for_update(skip_locked=True)
    )
