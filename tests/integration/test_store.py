"""The Store against real SQLite and PostgreSQL (parametrised): ingest, reads, the work queue
and its lease guard."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from deskbell.errors import IdempotencyConflict, InvalidState, NotFound
from deskbell.models import AssistanceRequestIn, Customer, DeliveryStatus, Outcome
from deskbell.routing.router import Target
from deskbell.storage.store import AttemptResult, Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def req(topic: str = "sales", description: str = "help") -> AssistanceRequestIn:
    return AssistanceRequestIn(topic=topic, description=description)


async def test_accept_commits_request_and_deliveries(store: Store) -> None:
    stored, created = await store.accept(req(), [Target("a"), Target("b")], T0)
    assert created
    loaded = await store.get_request(stored.id)
    assert loaded is not None
    assert loaded.payload == req()
    assert loaded.created_at == T0
    assert [(d.channel, d.status) for d in loaded.deliveries] == [
        ("a", DeliveryStatus.PENDING),
        ("b", DeliveryStatus.PENDING),
    ]


async def test_ids_are_time_ordered(store: Store) -> None:
    ids = [(await store.accept(req(), [Target("a")], T0))[0].id for _ in range(20)]
    assert ids == sorted(ids)


async def test_idempotency_same_body_returns_first_and_creates_nothing(store: Store) -> None:
    first, created = await store.accept(
        req(), [Target("a")], T0, idempotency_key="k", body_hash="h"
    )
    again, created_again = await store.accept(
        req(), [Target("a")], T0 + timedelta(hours=1), idempotency_key="k", body_hash="h"
    )
    assert created
    assert not created_again
    assert again.id == first.id
    items, _ = await store.list_requests()
    assert len(items) == 1


async def test_idempotency_different_body_conflicts(store: Store) -> None:
    await store.accept(req(), [Target("a")], T0, idempotency_key="k", body_hash="h1")
    with pytest.raises(IdempotencyConflict):
        await store.accept(req(), [Target("a")], T0, idempotency_key="k", body_hash="h2")


async def test_idempotency_key_expires_after_a_day(store: Store) -> None:
    first, _ = await store.accept(req(), [Target("a")], T0, idempotency_key="k", body_hash="h")
    later, created = await store.accept(
        req(), [Target("a")], T0 + timedelta(hours=25), idempotency_key="k", body_hash="h"
    )
    assert created
    assert later.id != first.id


async def test_concurrent_same_key_creates_one(store: Store) -> None:
    results = await asyncio.gather(
        *(
            store.accept(req(), [Target("a")], T0, idempotency_key="race", body_hash="h")
            for _ in range(8)
        )
    )
    assert len({stored.id for stored, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_list_pages_newest_first_with_filters(store: Store) -> None:
    ids = []
    for i in range(7):
        topic = "sales" if i % 2 == 0 else "pricing"
        ids.append((await store.accept(req(topic), [Target("a")], T0 + timedelta(minutes=i)))[0].id)
    page1, cursor = await store.list_requests(limit=3)
    page2, cursor2 = await store.list_requests(limit=3, cursor=cursor)
    page3, cursor3 = await store.list_requests(limit=3, cursor=cursor2)
    assert [s.id for s in page1 + page2 + page3] == list(reversed(ids))
    assert cursor3 is None
    sales, _ = await store.list_requests(topic="sales")
    assert [s.id for s in sales] == [ids[6], ids[4], ids[2], ids[0]]
    recent, _ = await store.list_requests(since=T0 + timedelta(minutes=5))
    assert [s.id for s in recent] == [ids[6], ids[5]]


async def test_reads_give_back_the_accepted_payload_and_every_delivery(store: Store) -> None:
    """Reads build the payload from the stored JSON without validating it again, and read a
    request with its deliveries in one statement (a LEFT JOIN)."""
    full = AssistanceRequestIn.model_validate(
        {
            "topic": "Sales",
            "description": " wants a quote ",
            "customer": {"name": "Ana Núñez", "email": "Ana@Example.COM"},
            "conversation_url": "https://chat.example.com/c/1",
            "language": "es",
            "metadata": {"plan": "pro", "seats": 40, "ratio": 0.5, "trial": False},
        }
    )
    bare, _ = await store.accept(req(), [], T0)  # no delivery at all
    stored, _ = await store.accept(full, [Target("b"), Target("a"), Target("c")], T0)
    loaded = await store.get_request(stored.id)
    listed, cursor = await store.list_requests()
    assert loaded is not None
    assert ([s.id for s in listed], cursor) == ([stored.id, bare.id], None)
    for found in (loaded, listed[0]):
        assert found.payload == full
        assert isinstance(found.payload.customer, Customer)
        assert found.payload.customer.email == "Ana@example.com"  # as normalised at ingest
        assert found.payload.field_value("customer.email") == "Ana@example.com"
        assert found.created_at == T0
        assert found.deliveries == sorted(stored.deliveries, key=lambda d: d.id)
        assert [d.channel for d in found.deliveries] == ["b", "a", "c"]
    empty = await store.get_request(bare.id)
    assert empty is not None
    assert (empty.payload, empty.deliveries, listed[1].deliveries) == (req(), [], [])
    assert await store.get_request("missing") is None


async def test_claim_takes_due_work_once_and_counts_the_attempt(store: Store) -> None:
    stored, _ = await store.accept(req(), [Target("a"), Target("b")], T0)
    first = await store.claim("w1", T0, lease=LEASE, limit=10)
    second = await store.claim("w2", T0, lease=LEASE, limit=10)
    assert sorted(c.delivery.channel for c in first) == ["a", "b"]
    assert second == []
    assert all(c.delivery.attempts == 1 for c in first)
    assert all(c.request == stored.payload for c in first)
    loaded = await store.get_request(stored.id)
    assert loaded is not None
    assert {d.status for d in loaded.deliveries} == {DeliveryStatus.IN_FLIGHT}


async def test_claim_respects_limit_and_due_time(store: Store) -> None:
    for _ in range(5):
        await store.accept(req(), [Target("a")], T0)
    assert len(await store.claim("w", T0 - timedelta(seconds=1), lease=LEASE, limit=10)) == 0
    assert len(await store.claim("w", T0, lease=LEASE, limit=2)) == 2
    assert len(await store.claim("w", T0, lease=LEASE, limit=10)) == 3


def result(status: DeliveryStatus, outcome: Outcome, at: datetime, **kw: object) -> AttemptResult:
    return AttemptResult(
        outcome=outcome, status=status, started_at=at, finished_at=at + timedelta(seconds=1), **kw
    )  # type: ignore[arg-type]


async def test_record_sent_and_attempt_history(store: Store) -> None:
    await store.accept(req(), [Target("a")], T0)
    (claimed,) = await store.claim("w", T0, lease=LEASE, limit=1)
    assert await store.record_attempt(claimed, result(DeliveryStatus.SENT, Outcome.SENT, T0))
    delivery = await store.get_delivery(claimed.delivery.id)
    assert delivery is not None
    assert delivery.status is DeliveryStatus.SENT
    assert delivery.sent_at == T0 + timedelta(seconds=1)
    (attempt,) = await store.attempts_of(delivery.id)
    assert (attempt.number, attempt.outcome, attempt.worker) == (1, Outcome.SENT, "w")
    assert attempt.duration_ms == pytest.approx(1000)


async def test_retrying_delivery_comes_back_when_due(store: Store) -> None:
    await store.accept(req(), [Target("a")], T0)
    (claimed,) = await store.claim("w", T0, lease=LEASE, limit=1)
    later = T0 + timedelta(seconds=10)
    await store.record_attempt(
        claimed,
        result(
            DeliveryStatus.RETRYING, Outcome.TRANSIENT, T0, error="HTTP 503", next_attempt_at=later
        ),
    )
    assert await store.claim("w", later - timedelta(seconds=1), lease=LEASE, limit=1) == []
    (again,) = await store.claim("w", later, lease=LEASE, limit=1)
    assert again.delivery.attempts == 2
    assert again.delivery.last_error == "HTTP 503"


async def test_expired_lease_is_taken_over_and_old_owner_cannot_write(store: Store) -> None:
    await store.accept(req(), [Target("a")], T0)
    (mine,) = await store.claim("old", T0, lease=LEASE, limit=1)
    assert await store.claim("new", T0 + timedelta(seconds=29), lease=LEASE, limit=1) == []
    (theirs,) = await store.claim("new", T0 + timedelta(seconds=31), lease=LEASE, limit=1)
    assert theirs.delivery.id == mine.delivery.id
    late = T0 + timedelta(seconds=40)
    assert not await store.record_attempt(
        mine, result(DeliveryStatus.DEAD, Outcome.PERMANENT, late)
    )
    assert await store.record_attempt(theirs, result(DeliveryStatus.SENT, Outcome.SENT, late))
    delivery = await store.get_delivery(mine.delivery.id)
    assert delivery is not None
    assert delivery.status is DeliveryStatus.SENT
    assert [a.worker for a in await store.attempts_of(mine.delivery.id)] == ["new"]


async def test_dead_with_fallback_creates_linked_delivery(store: Store) -> None:
    stored, _ = await store.accept(req(), [Target("slack", fallback="mail")], T0)
    (claimed,) = await store.claim("w", T0, lease=LEASE, limit=1)
    await store.record_attempt(
        claimed, result(DeliveryStatus.DEAD, Outcome.PERMANENT, T0, error="no_service")
    )
    loaded = await store.get_request(stored.id)
    assert loaded is not None
    (dead, fallback) = loaded.deliveries
    assert dead.status is DeliveryStatus.DEAD
    assert (fallback.channel, fallback.status, fallback.fallback_of) == (
        "mail",
        DeliveryStatus.PENDING,
        dead.id,
    )


async def test_retry_dead_puts_it_back(store: Store) -> None:
    await store.accept(req(), [Target("a")], T0)
    (claimed,) = await store.claim("w", T0, lease=LEASE, limit=1)
    with pytest.raises(InvalidState):
        await store.retry_dead(claimed.delivery.id, T0)
    await store.record_attempt(claimed, result(DeliveryStatus.DEAD, Outcome.PERMANENT, T0))
    revived = await store.retry_dead(claimed.delivery.id, T0 + timedelta(minutes=1))
    assert revived.status is DeliveryStatus.PENDING
    assert len(await store.claim("w", T0 + timedelta(minutes=1), lease=LEASE, limit=1)) == 1
    with pytest.raises(NotFound):
        await store.retry_dead("missing", T0)


async def test_status_filter_and_next_due(store: Store) -> None:
    a, _ = await store.accept(req(), [Target("a")], T0)
    b, _ = await store.accept(req(), [Target("a")], T0 + timedelta(seconds=5))
    assert await store.next_due_at() == T0
    claimed = await store.claim("w", T0, lease=LEASE, limit=1)
    await store.record_attempt(claimed[0], result(DeliveryStatus.SENT, Outcome.SENT, T0))
    sent, _ = await store.list_requests(status=DeliveryStatus.SENT)
    pending, _ = await store.list_requests(status=DeliveryStatus.PENDING)
    assert [s.id for s in sent] == [a.id]
    assert [s.id for s in pending] == [b.id]
    assert await store.next_due_at() == T0 + timedelta(seconds=5)


async def test_claim_respects_per_channel_room(store: Store) -> None:
    for _ in range(4):
        await store.accept(req(), [Target("slow"), Target("fast"), Target("gone")], T0)
    claimed = await store.claim("w", T0, lease=LEASE, limit=10, room={"slow": 1, "fast": 3})
    by_channel = sorted(c.delivery.channel for c in claimed)
    # `gone` is not in the config any more: still claimed (to be settled), capped by limit
    assert by_channel.count("slow") == 1
    assert by_channel.count("fast") == 3
    assert by_channel.count("gone") == 4
    blocked = await store.claim("w", T0, lease=LEASE, limit=10, room={"slow": 0, "fast": 0})
    assert blocked == []


async def test_renew_extends_only_held_leases(store: Store) -> None:
    await store.accept(req(), [Target("a"), Target("b")], T0)
    a, b = await store.claim("w", T0, lease=LEASE, limit=2)
    later = T0 + timedelta(seconds=25)
    assert await store.renew("w", [a.delivery.id, b.delivery.id], later, lease=LEASE) == {
        a.delivery.id,
        b.delivery.id,
    }
    # renewed at 25 s for 30 s: not reclaimable at 40 s, as it would have been without renewal
    assert await store.claim("x", T0 + timedelta(seconds=40), lease=LEASE, limit=2) == []
    assert await store.renew("intruder", [a.delivery.id], later, lease=LEASE) == set()


async def test_release_gives_back_without_counting_the_attempt(store: Store) -> None:
    await store.accept(req(), [Target("a")], T0)
    (claimed,) = await store.claim("w", T0, lease=LEASE, limit=1)
    assert await store.release(claimed, T0)
    (again,) = await store.claim("w2", T0, lease=LEASE, limit=1)
    assert again.delivery.attempts == 1
    assert not await store.release(claimed, T0)  # no longer ours
