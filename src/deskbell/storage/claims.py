"""Which due deliveries a claim takes: the earliest due, at most `limit`, and no more of a
channel than its room (0 for a channel whose slots are full or whose breaker probes).

A claim first reads the head of the queue, the earliest `HEAD_ROWS_PER_SLOT * limit` due rows
across channels, one ordered scan of the (status, next_attempt_at) index per status, and
picks from those in order, each channel up to its room. That is the answer whenever the head
holds enough (or is the whole queue). When channels at their room crowd the head (a busy
channel's backlog ahead of a quiet one's request), it reads, for each channel in `room` that
still has room, that channel's own earliest due rows up to its room, through the (status,
channel, next_attempt_at) index: a backlog of one channel never hides another's work, and
no claim reads more than the rows it may take. (Ranking the whole backlog per channel with a
`row_number()` window gave the same answer, but at the default `max_concurrency` a busy
channel's claims ranked it on every claim.) A channel the config no longer names is found
only in the head, where it is capped by `limit` alone.

On PostgreSQL the rows are locked with `FOR UPDATE SKIP LOCKED` by the select that reads
them, and that select's WHERE holds the `due` condition: PostgreSQL re-checks only the
locking select's WHERE against the newest version of a row it locks, so a row another worker
claimed meanwhile is not claimed twice.

Both statements are built once, with bound parameters (`now`, the blocked channels or the
channel, the row count): building and keying them anew on every claim cost more than
running them.
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


def fixed(status: DeliveryStatus) -> sa.BindParameter[str]:
    """`status` written into the statement's text rather than bound: PostgreSQL's generic plan
    for a prepared statement then knows which status it reads (few pending rows, many sent),
    and may use the partial index of waiting rows."""
    return sa.bindparam(None, status.value, type_=deliveries.c.status.type, literal_execute=True)


def choose(
    conn: sa.Connection, now: datetime, limit: int, room: Mapping[str, int] | None
) -> list[str]:
    """The ids to claim, locked on PostgreSQL (SQLite's BEGIN IMMEDIATE holds the database)."""
    if room is None:
        return list(conn.execute(_earliest(due_condition(now), limit)).scalars())
    blocked = [channel for channel, n in room.items() if n <= 0]
    rows = HEAD_ROWS_PER_SLOT * limit
    head = conn.execute(_HEAD, {"now": now, "blocked": blocked, "rows": rows}).all()
    taken: Counter[str] = Counter()
    ids = _pick(head, limit, room, taken)
    if len(ids) == limit or len(head) < rows:
        return ids
    # The head was crowded by channels at their room: the others' own earliest rows.
    chosen = set(ids)
    more: list[Any] = []
    for channel, n in room.items():
        left = n - taken[channel]
        if left <= 0:
            continue
        params = {"now": now, "channel": channel, "rows": taken[channel] + left}
        found = conn.execute(_CHANNEL_HEAD, params).all()
        more += [row for row in found if row.id not in chosen][:left]
    more.sort(key=lambda row: row.next_attempt_at)
    return ids + [row.id for row in more[: limit - len(ids)]]


def _pick(
    head: Sequence[Any], limit: int, room: Mapping[str, int], taken: Counter[str]
) -> list[str]:
    ids: list[str] = []
    for row in head:
        if taken[row.channel] < room.get(row.channel, limit):
            taken[row.channel] += 1
            ids.append(row.id)
            if len(ids) == limit:
                break
    return ids


def _head(of_channel: bool) -> sa.Select[Any]:
    """The earliest `rows` due rows of the channels not `blocked` (or of `channel`): one
    ordered index scan per status, so nothing past the head is read.

    On PostgreSQL each scan locks its rows, skipping those other workers hold (so workers
    claiming together take different rows); each scan's WHERE is its part of `due`, which
    PostgreSQL re-checks on the newest version of a row it locks. FOR UPDATE is not allowed
    on a UNION itself, only on the selects it reads from."""
    c = deliveries.c
    now = sa.bindparam("now", type_=c.next_attempt_at.type)
    rows = sa.bindparam("rows", type_=sa.Integer())
    which = (
        c.channel == sa.bindparam("channel", type_=c.channel.type)
        if of_channel
        else c.channel.not_in(sa.bindparam("blocked", expanding=True, type_=c.channel.type))
    )
    conditions = [
        sa.and_(c.status == fixed(DeliveryStatus.PENDING), c.next_attempt_at <= now),
        sa.and_(c.status == fixed(DeliveryStatus.RETRYING), c.next_attempt_at <= now),
        sa.and_(c.status == fixed(DeliveryStatus.IN_FLIGHT), c.lease_expires_at < now),
    ]
    parts = [
        sa.select(c.id, c.channel, c.next_attempt_at)
        .where(condition, which)
        .order_by(c.next_attempt_at)
        .limit(rows)
        .with_for_update(skip_locked=True)
        .subquery()
        for condition in conditions
    ]
    union = sa.union_all(*(sa.select(part) for part in parts)).subquery()
    return (
        sa.select(union.c.id, union.c.channel, union.c.next_attempt_at)
        .order_by(union.c.next_attempt_at)
        .limit(rows)
    )


_HEAD = _head(of_channel=False)
_CHANNEL_HEAD = _head(of_channel=True)


def _earliest(due: sa.ColumnElement[bool], limit: int) -> sa.Select[Any]:
    return (
        sa.select(deliveries.c.id)
        .where(due)
        .order_by(deliveries.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
