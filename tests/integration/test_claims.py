"""Which deliveries a claim takes (storage/claims.py), on both engines: it reads only the
head of the queue when that is enough, and each other channel's own earliest rows when
channels with little room crowd the head, so a backlog of one channel never hides another
channel's work; claims running at the same time never take the same delivery."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from deskbell.models import AssistanceRequestIn, DeliveryStatus
from deskbell.routing.router import Target
from deskbell.storage.claims import HEAD_ROWS_PER_SLOT
from deskbell.storage.store import Storage
from deskbell.storage.tables import requests

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


async def add(store: Storage, channel: str, n: int, at: datetime) -> None:
    for i in range(n):
        payload = AssistanceRequestIn(topic="sales", description=f"{channel} {i}")
        await store.requests.accept_one(payload, [Target(channel)], at)


async def test_a_crowded_head_reads_the_other_channels_own_rows(store: Storage) -> None:
    limit = 4
    # The slow channel's backlog is older than the fast channel's: the head is all slow.
    await add(store, "slow", HEAD_ROWS_PER_SLOT * limit + 5, T0)
    await add(store, "fast", 3, T0 + timedelta(seconds=1))
    now = T0 + timedelta(seconds=2)

    claimed = await store.queue.claim(
        "w", now, lease=LEASE, limit=limit, room={"slow": 1, "fast": 8}
    )

    assert Counter(c.delivery.channel for c in claimed) == {"slow": 1, "fast": 3}


async def test_a_channel_in_the_head_and_behind_it_is_claimed_once_up_to_its_room(
    store: Storage,
) -> None:
    limit = 6
    await add(store, "quiet", 1, T0)  # in the head
    await add(store, "busy", HEAD_ROWS_PER_SLOT * limit + 5, T0 + timedelta(seconds=1))
    await add(store, "quiet", 3, T0 + timedelta(seconds=2))  # behind the busy backlog
    now = T0 + timedelta(seconds=3)

    claimed = await store.queue.claim(
        "w", now, lease=LEASE, limit=limit, room={"busy": 2, "quiet": 3, "idle": 5}
    )

    assert Counter(c.delivery.channel for c in claimed) == {"busy": 2, "quiet": 3}
    assert len({c.delivery.id for c in claimed}) == 5
    # its earliest three: the one in the head and the first two behind it (each `add` numbers
    # its own from 0)
    quiet = sorted(c.request.description for c in claimed if c.delivery.channel == "quiet")
    assert quiet == ["quiet 0", "quiet 0", "quiet 1"]


async def test_the_head_serves_claims_in_due_order_within_each_room(store: Storage) -> None:
    await add(store, "a", 6, T0)
    await add(store, "b", 6, T0 + timedelta(seconds=1))
    await add(store, "gone", 2, T0 + timedelta(seconds=2))  # not configured: capped by limit
    now = T0 + timedelta(seconds=3)

    first = await store.queue.claim("w", now, lease=LEASE, limit=5, room={"a": 2, "b": 5})
    rest = await store.queue.claim("w", now, lease=LEASE, limit=20, room={"a": 0, "b": 5})

    assert Counter(c.delivery.channel for c in first) == {"a": 2, "b": 3}
    assert Counter(c.delivery.channel for c in rest) == {"b": 3, "gone": 2}
    assert all(c.delivery.status is DeliveryStatus.IN_FLIGHT for c in first + rest)


async def test_concurrent_claims_never_take_the_same_delivery(store: Storage) -> None:
    await add(store, "a", 40, T0)
    now = T0 + timedelta(seconds=1)

    batches = await asyncio.gather(
        *(store.queue.claim(f"w{i}", now, lease=LEASE, limit=5, room={"a": 5}) for i in range(10))
    )
    ids = [c.delivery.id for batch in batches for c in batch]

    assert len(ids) == len(set(ids))
    assert 0 < len(ids) <= 40
    for batch in batches:  # each claimed delivery is held by the worker that claimed it
        for c in batch:
            held = await store.reads.get_delivery(c.delivery.id)
            assert held is not None
            assert held.lease_owner == c.lease_owner


async def test_a_stored_payload_the_model_would_refuse_today_is_still_claimed(
    store: Storage,
) -> None:
    """Stored payloads were validated when accepted; the claim builds them without checking
    again, so one row written under older rules (here a null metadata value, which ingest
    once stored for NaN) cannot fail the claim of every delivery beside it."""
    await add(store, "a", 3, T0)
    async with store.db.writer.begin() as conn:
        await conn.execute(
            requests.update()
            .where(requests.c.id == sa.select(sa.func.min(requests.c.id)).scalar_subquery())
            .values(payload={"topic": "sales", "description": "old", "metadata": {"x": None}})
        )

    claimed = await store.queue.claim(
        "w", T0 + timedelta(seconds=1), lease=LEASE, limit=5, room={"a": 5}
    )

    assert len(claimed) == 3
    assert {c.request.metadata.get("x", "absent") for c in claimed} == {None, "absent"}
