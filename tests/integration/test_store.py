"""The Store against real SQLite and PostgreSQL (parametrised): ingest, reads, the work queue
and its lease guard."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from deskbell.errors import IdempotencyConflict, InvalidState, NotFound
from deskbell.models import AssistanceRequestIn, AttemptResult, Customer, DeliveryStatus, Outcome
from deskbell.routing.router import Target
from deskbell.storage.store import Storage
from tests.ledger import attempts_of, record_attempt

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def req(topic: str = "sales", description: str = "help") -> AssistanceRequestIn:
    return AssistanceRequestIn(topic=topic, description=description)


async def test_accept_commits_request_and_deliveries(store: Storage) -> None:
    stored, created = await store.requests.accept_one(req(), [Target("a"), Target("b")], T0)
    assert created
    loaded = await store.reads.get_request(stored.id)
    assert loaded is not None
    assert loaded.payload == req()
    assert loaded.created_at == T0
    assert [(d.channel, d.status) for d in loaded.deliveries] == [
        ("a", DeliveryStatus.PENDING),
        ("b", DeliveryStatus.PENDING),
    ]


async def test_ids_are_time_ordered(store: Storage) -> None:
    ids = [(await store.requests.accept_one(req(), [Target("a")], T0))[0].id for _ in range(20)]
    assert ids == sorted(ids)


async def test_idempotency_same_body_returns_first_and_creates_nothing(store: Storage) -> None:
    first, created = await store.requests.accept_one(
        req(), [Target("a")], T0, idempotency_key="k", body_hash="h"
    )
    again, created_again = await store.requests.accept_one(
        req(), [Target("a")], T0 + timedelta(hours=1), idempotency_key="k", body_hash="h"
    )
    assert created
    assert not created_again
    assert again.id == first.id
    items, _ = await store.reads.list_requests()
    assert len(items) == 1


async def test_idempotency_different_body_conflicts(store: Storage) -> None:
    await store.requests.accept_one(req(), [Target("a")], T0, idempotency_key="k", body_hash="h1")
    with pytest.raises(IdempotencyConflict):
        await store.requests.accept_one(
            req(), [Target("a")], T0, idempotency_key="k", body_hash="h2"
        )


async def test_idempotency_key_expires_after_a_day(store: Storage) -> None:
    first, _ = await store.requests.accept_one(
        req(), [Target("a")], T0, idempotency_key="k", body_hash="h"
    )
    later, created = await store.requests.accept_one(
        req(), [Target("a")], T0 + timedelta(hours=25), idempotency_key="k", body_hash="h"
    )
    assert created
    assert later.id != first.id


async def test_concurrent_same_key_creates_one(store: Storage) -> None:
    results = await asyncio.gather(
        *(
            store.requests.accept_one(
                req(), [Target("a")], T0, idempotency_key="race", body_hash="h"
            )
            for _ in range(8)
        )
    )
    assert len({stored.id for stored, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_list_pages_newest_first_with_filters(store: Storage) -> None:
    ids = []
    for i in range(7):
        topic = "sales" if i % 2 == 0 else "pricing"
        ids.append(
            (await store.requests.accept_one(req(topic), [Target("a")], T0 + timedelta(minutes=i)))[
                0
            ].id
        )
    page1, cursor = await store.reads.list_requests(limit=3)
    page2, cursor2 = await store.reads.list_requests(limit=3, cursor=cursor)
    page3, cursor3 = await store.reads.list_requests(limit=3, cursor=cursor2)
    assert [s.id for s in page1 + page2 + page3] == list(reversed(ids))
    assert cursor3 is None
    sales, _ = await store.reads.list_requests(topic="sales")
    assert [s.id for s in sales] == [ids[6], ids[4], ids[2], ids[0]]
    recent, _ = await store.reads.list_requests(since=T0 + timedelta(minutes=5))
    assert [s.id for s in recent] == [ids[6], ids[5]]


async def test_reads_give_back_the_accepted_payload_and_every_delivery(store: Storage) -> None:
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
    bare, _ = await store.requests.accept_one(req(), [], T0)  # no delivery at all
    stored, _ = await store.requests.accept_one(full, [Target("b"), Target("a"), Target("c")], T0)
    loaded = await store.reads.get_request(stored.id)
    listed, cursor = await store.reads.list_requests()
    assert loaded is not None
    assert ([s.id for s in listed], cursor) == ([stored.id, bare.id], None)
    for found in (loaded, listed[0]):
        assert found.payload == full
        assert isinstance(found.payload.customer, Customer)
        assert found.payload.customer.email == "Ana@example.com"  # as normalised at ingest
        assert found.payload.field_value("customer.email") == "Ana@example.com"
        assert found.created_at == T0
        assert [d.id for d in found.deliveries] == sorted(d.id for d in stored.deliveries)
        assert [d.channel for d in found.deliveries] == ["b", "a", "c"]
    empty = await store.reads.get_request(bare.id)
    assert empty is not None
    assert (empty.payload, empty.deliveries, listed[1].deliveries) == (req(), [], [])
    assert await store.reads.get_request("missing") is None


async def test_claim_takes_due_work_once_and_counts_the_attempt(store: Storage) -> None:
    stored, _ = await store.requests.accept_one(req(), [Target("a"), Target("b")], T0)
    first = await store.queue.claim("w1", T0, lease=LEASE, limit=10)
    second = await store.queue.claim("w2", T0, lease=LEASE, limit=10)
    assert sorted(c.delivery.channel for c in first) == ["a", "b"]
    assert second == []
    assert all(c.delivery.attempts == 1 for c in first)
    assert all(c.request == req() for c in first)
    loaded = await store.reads.get_request(stored.id)
    assert loaded is not None
    assert {d.status for d in loaded.deliveries} == {DeliveryStatus.IN_FLIGHT}


async def test_claim_respects_limit_and_due_time(store: Storage) -> None:
    for _ in range(5):
        await store.requests.accept_one(req(), [Target("a")], T0)
    assert len(await store.queue.claim("w", T0 - timedelta(seconds=1), lease=LEASE, limit=10)) == 0
    assert len(await store.queue.claim("w", T0, lease=LEASE, limit=2)) == 2
    assert len(await store.queue.claim("w", T0, lease=LEASE, limit=10)) == 3


def result(status: DeliveryStatus, outcome: Outcome, at: datetime, **kw: object) -> AttemptResult:
    return AttemptResult(
        outcome=outcome, status=status, started_at=at, finished_at=at + timedelta(seconds=1), **kw
    )  # type: ignore[arg-type]


async def test_record_sent_and_attempt_history(store: Storage) -> None:
    await store.requests.accept_one(req(), [Target("a")], T0)
    (claimed,) = await store.queue.claim("w", T0, lease=LEASE, limit=1)
    assert await record_attempt(store, claimed, result(DeliveryStatus.SENT, Outcome.SENT, T0))
    delivery = await store.reads.get_delivery(claimed.delivery.id)
    assert delivery is not None
    assert delivery.status is DeliveryStatus.SENT
    assert delivery.sent_at == T0 + timedelta(seconds=1)
    (attempt,) = await attempts_of(store, delivery.id)
    assert (attempt.number, attempt.outcome, attempt.worker) == (1, Outcome.SENT, "w")
    assert attempt.duration_ms == pytest.approx(1000)


async def test_retrying_delivery_comes_back_when_due(store: Storage) -> None:
    await store.requests.accept_one(req(), [Target("a")], T0)
    (claimed,) = await store.queue.claim("w", T0, lease=LEASE, limit=1)
    later = T0 + timedelta(seconds=10)
    await record_attempt(
        store,
        claimed,
        result(
            DeliveryStatus.RETRYING, Outcome.TRANSIENT, T0, error="HTTP 503", next_attempt_at=later
        ),
    )
    assert await store.queue.claim("w", later - timedelta(seconds=1), lease=LEASE, limit=1) == []
    (again,) = await store.queue.claim("w", later, lease=LEASE, limit=1)
    assert again.delivery.attempts == 2
    assert again.delivery.last_error == "HTTP 503"


async def test_expired_lease_is_taken_over_and_old_owner_cannot_write(store: Storage) -> None:
    await store.requests.accept_one(req(), [Target("a")], T0)
    (mine,) = await store.queue.claim("old", T0, lease=LEASE, limit=1)
    assert await store.queue.claim("new", T0 + timedelta(seconds=29), lease=LEASE, limit=1) == []
    (theirs,) = await store.queue.claim("new", T0 + timedelta(seconds=31), lease=LEASE, limit=1)
    assert theirs.delivery.id == mine.delivery.id
    late = T0 + timedelta(seconds=40)
    assert not await record_attempt(
        store, mine, result(DeliveryStatus.DEAD, Outcome.PERMANENT, late)
    )
    assert await record_attempt(store, theirs, result(DeliveryStatus.SENT, Outcome.SENT, late))
    delivery = await store.reads.get_delivery(mine.delivery.id)
    assert delivery is not None
    assert delivery.status is DeliveryStatus.SENT
    assert [a.worker for a in await attempts_of(store, mine.delivery.id)] == ["new"]


async def test_dead_with_fallback_creates_linked_delivery(store: Storage) -> None:
    stored, _ = await store.requests.accept_one(req(), [Target("slack", fallback="mail")], T0)
    (claimed,) = await store.queue.claim("w", T0, lease=LEASE, limit=1)
    await record_attempt(
        store, claimed, result(DeliveryStatus.DEAD, Outcome.PERMANENT, T0, error="no_service")
    )
    loaded = await store.reads.get_request(stored.id)
    assert loaded is not None
    (dead, fallback) = loaded.deliveries
    assert dead.status is DeliveryStatus.DEAD
    assert (fallback.channel, fallback.status, fallback.fallback_of) == (
        "mail",
        DeliveryStatus.PENDING,
        dead.id,
    )


async def test_retry_dead_puts_it_back(store: Storage) -> None:
    await store.requests.accept_one(req(), [Target("a")], T0)
    (claimed,) = await store.queue.claim("w", T0, lease=LEASE, limit=1)
    with pytest.raises(InvalidState):
        await store.queue.retry_dead(claimed.delivery.id, T0)
    await record_attempt(store, claimed, result(DeliveryStatus.DEAD, Outcome.PERMANENT, T0))
    revived = await store.queue.retry_dead(claimed.delivery.id, T0 + timedelta(minutes=1))
    assert revived.status is DeliveryStatus.PENDING
    assert len(await store.queue.claim("w", T0 + timedelta(minutes=1), lease=LEASE, limit=1)) == 1
    with pytest.raises(NotFound):
        await store.queue.retry_dead("missing", T0)


async def test_status_filter_and_next_due(store: Storage) -> None:
    a, _ = await store.requests.accept_one(req(), [Target("a")], T0)
    b, _ = await store.requests.accept_one(req(), [Target("a")], T0 + timedelta(seconds=5))
    assert await store.queue.next_due_at() == T0
    claimed = await store.queue.claim("w", T0, lease=LEASE, limit=1)
    await record_attempt(store, claimed[0], result(DeliveryStatus.SENT, Outcome.SENT, T0))
    sent, _ = await store.reads.list_requests(status=DeliveryStatus.SENT)
    pending, _ = await store.reads.list_requests(status=DeliveryStatus.PENDING)
    assert [s.id for s in sent] == [a.id]
    assert [s.id for s in pending] == [b.id]
    assert await store.queue.next_due_at() == T0 + timedelta(seconds=5)


async def test_claim_respects_per_channel_room(store: Storage) -> None:
    for _ in range(4):
        await store.requests.accept_one(req(), [Target("slow"), Target("fast"), Target("gone")], T0)
    claimed = await store.queue.claim("w", T0, lease=LEASE, limit=10, room={"slow": 1, "fast": 3})
    by_channel = sorted(c.delivery.channel for c in claimed)
    # `gone` is not in the config any more: still claimed (to be settled), capped by limit
    assert by_channel.count("slow") == 1
    assert by_channel.count("fast") == 3
    assert by_channel.count("gone") == 4
    blocked = await store.queue.claim("w", T0, lease=LEASE, limit=10, room={"slow": 0, "fast": 0})
    assert blocked == []


async def test_renew_extends_only_held_leases(store: Storage) -> None:
    await store.requests.accept_one(req(), [Target("a"), Target("b")], T0)
    a, b = await store.queue.claim("w", T0, lease=LEASE, limit=2)
    later = T0 + timedelta(seconds=25)
    assert await store.queue.renew("w", [a.delivery.id, b.delivery.id], later, lease=LEASE) == {
        a.delivery.id,
        b.delivery.id,
    }
    # renewed at 25 s for 30 s: not reclaimable at 40 s, as it would have been without renewal
    assert await store.queue.claim("x", T0 + timedelta(seconds=40), lease=LEASE, limit=2) == []
    assert await store.queue.renew("intruder", [a.delivery.id], later, lease=LEASE) == set()


async def test_release_gives_back_without_counting_the_attempt(store: Storage) -> None:
    await store.requests.accept_one(req(), [Target("a")], T0)
    (claimed,) = await store.queue.claim("w", T0, lease=LEASE, limit=1)
    assert await store.queue.release_many([claimed], T0)
    (again,) = await store.queue.claim("w2", T0, lease=LEASE, limit=1)
    assert again.delivery.attempts == 1
    assert not await store.queue.release_many([claimed], T0)  # no longer ours
