"""Attempt results committed in batches (delivery/recorder.py, storage/attempts.py), on both
engines: results that finish together share a transaction and are all visible; a lost lease
in a batch changes nothing of that delivery; a batch whose commit fails is retried one result
at a time, so only the bad result fails and nothing is marked sent that was not; a result
waiting for its commit keeps its lease; stopping commits the results already handed over.

The failure is real (a trigger refuses one attempt row), and so is the waiting: `GatedStorage`
is the real storage whose `record_attempts` waits for the test to open a gate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from deskbell.delivery.recorder import AttemptRecorder
from deskbell.delivery.worker import WorkerPool
from deskbell.models import AssistanceRequestIn, AttemptResult, Claimed, DeliveryStatus, Outcome
from deskbell.routing.router import Target
from deskbell.storage.engine import connect
from deskbell.storage.store import Storage
from deskbell.storage.tables import deliveries
from deskbell.wiring import Runtime
from tests.fakes import wait_until_async, wait_until_true
from tests.fakes.slack import FakeSlack
from tests.gated import GatedStorage
from tests.ledger import attempts_of

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
POISON = {
    "sqlite": [
        """CREATE TRIGGER poison BEFORE INSERT ON attempts WHEN NEW.error = 'poison'
        BEGIN SELECT RAISE(ABORT, 'poisoned attempt'); END"""
    ],
    "postgresql": [
        """CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.error = 'poison' THEN RAISE EXCEPTION 'poisoned attempt'; END IF;
            RETURN NEW;
        END $$""",
        """CREATE TRIGGER poison BEFORE INSERT ON attempts
        FOR EACH ROW EXECUTE FUNCTION poison()""",
    ],
}


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[GatedStorage]:
    db = connect(database_url)
    yield GatedStorage(db)
    await db.dispose()


async def seed(store: Storage | GatedStorage, n: int, fallback: str | None = None) -> list[Claimed]:
    for i in range(n):
        payload = AssistanceRequestIn(topic="sales", description=f"request {i}")
        await store.requests.accept_one(payload, [Target("a", fallback=fallback)], T0)
    claimed = await store.queue.claim("w", T0, lease=LEASE, limit=n)
    assert len(claimed) == n
    return claimed


def result(status: DeliveryStatus, error: str | None = None) -> AttemptResult:
    outcome = {
        DeliveryStatus.SENT: Outcome.SENT,
        DeliveryStatus.RETRYING: Outcome.TRANSIENT,
        DeliveryStatus.DEAD: Outcome.PERMANENT,
    }[status]
    later = T0 + timedelta(minutes=5) if status is DeliveryStatus.RETRYING else None
    return AttemptResult(
        outcome, status, T0, T0 + timedelta(seconds=1), error=error, next_attempt_at=later
    )


async def test_results_that_finish_together_share_a_commit(store: GatedStorage) -> None:
    claimed = await seed(store, 60, fallback="b")
    wanted = [
        [DeliveryStatus.SENT, DeliveryStatus.RETRYING, DeliveryStatus.DEAD][i % 3]
        for i in range(60)
    ]
    recorder = AttemptRecorder(store.attempts)
    kept = await asyncio.gather(
        *(
            recorder.record_attempt(c, result(s, None if s is DeliveryStatus.SENT else "HTTP 5xx"))
            for c, s in zip(claimed, wanted, strict=True)
        )
    )
    await recorder.aclose()

    assert kept == [True] * 60
    assert sum(store.batches) == 60
    assert len(store.batches) < 10  # 60 results, a handful of transactions
    for c, status in zip(claimed, wanted, strict=True):
        delivery = await store.reads.get_delivery(c.delivery.id)
        assert delivery is not None
        assert (delivery.status, delivery.lease_owner) == (status, None)
        assert (delivery.sent_at is not None) is (status is DeliveryStatus.SENT)
        (attempt,) = await attempts_of(store, c.delivery.id)
        assert (attempt.number, attempt.worker) == (1, "w")
        loaded = await store.reads.get_request(c.delivery.request_id)
        assert loaded is not None
        fallbacks = [d for d in loaded.deliveries if d.fallback_of == c.delivery.id]
        assert len(fallbacks) == (1 if status is DeliveryStatus.DEAD else 0)


async def test_a_lost_lease_in_a_batch_changes_only_that_delivery(store: GatedStorage) -> None:
    mine = await seed(store, 3)
    late = T0 + timedelta(seconds=1)  # the others' leases run until T0 + LEASE
    async with store.db.writer.begin() as conn:  # the middle one's lease ran out: taken over
        await conn.execute(
            deliveries.update()
            .where(deliveries.c.id == mine[1].delivery.id)
            .values(lease_expires_at=T0)
        )
    (theirs,) = await store.queue.claim("other", late, lease=LEASE, limit=3)
    assert theirs.delivery.id == mine[1].delivery.id

    kept = await store.attempts.record_attempts([(c, result(DeliveryStatus.SENT)) for c in mine])

    assert kept == [True, False, True]
    taken = await store.reads.get_delivery(theirs.delivery.id)
    assert taken is not None
    assert (taken.status, taken.lease_owner) == (DeliveryStatus.IN_FLIGHT, "other")
    assert await attempts_of(store, theirs.delivery.id) == []


async def test_a_failed_batch_commit_fails_only_the_bad_result(store: GatedStorage) -> None:
    async with store.db.writer.begin() as conn:
        for statement in POISON[conn.dialect.name]:
            await conn.execute(sa.text(statement))
    claimed = await seed(store, 20)
    results = [result(DeliveryStatus.SENT) for _ in claimed]
    results[7] = result(DeliveryStatus.RETRYING, error="poison")
    recorder = AttemptRecorder(store.attempts)
    outcomes = await asyncio.gather(
        *(recorder.record_attempt(c, r) for c, r in zip(claimed, results, strict=True)),
        return_exceptions=True,
    )
    assert recorder.failed_batches == 1
    # The recorder goes on after a failure.
    await store.requests.accept_one(
        AssistanceRequestIn(topic="sales", description="later"), [Target("a")], T0
    )
    (later,) = await store.queue.claim("w", T0, lease=LEASE, limit=1)
    assert await recorder.record_attempt(later, result(DeliveryStatus.SENT))
    await recorder.aclose()

    assert isinstance(outcomes[7], sa.exc.DBAPIError)
    assert outcomes[:7] + outcomes[8:] == [True] * 19
    poisoned = await store.reads.get_delivery(claimed[7].delivery.id)
    assert poisoned is not None  # not recorded: still ours, retried when the lease runs out
    assert (poisoned.status, poisoned.lease_owner) == (DeliveryStatus.IN_FLIGHT, "w")
    assert await attempts_of(store, claimed[7].delivery.id) == []
    for c in [*claimed[:7], *claimed[8:], later]:
        delivery = await store.reads.get_delivery(c.delivery.id)
        assert delivery is not None
        assert delivery.status is DeliveryStatus.SENT
        assert len(await attempts_of(store, c.delivery.id)) == 1


def slack_config(slack: FakeSlack) -> str:
    return f"""
channels:
  sales-slack:
    type: slack
    webhook_url: {slack.url}
    max_concurrency: 16
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
"""


async def accept(runtime: Runtime, n: int) -> list[str]:
    ids = []
    for i in range(n):
        payload = AssistanceRequestIn(topic="sales", description=f"request {i}")
        stored, _ = await runtime.store.requests.accept_one(
            payload, [Target("sales-slack")], runtime.clock.now()
        )
        ids.append(stored.deliveries[0].id)
    return ids


async def statuses(store: Storage | GatedStorage, ids: list[str]) -> list[DeliveryStatus]:
    found = [await store.reads.get_delivery(i) for i in ids]
    return [d.status for d in found if d is not None]


async def lease_ends(store: Storage | GatedStorage, ids: list[str]) -> list[datetime]:
    found = [await store.reads.get_delivery(i) for i in ids]
    return [d.lease_expires_at or T0 for d in found if d is not None]


async def test_a_result_waiting_for_its_commit_keeps_its_lease(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack, database_url: str
) -> None:
    runtime = make_runtime(slack_config(fake_slack), url=database_url)
    store = GatedStorage(runtime.db)
    lease = timedelta(seconds=1.5)
    pool = WorkerPool(store, runtime.channels, runtime.clock, concurrency=8, lease=lease)
    ids = await accept(runtime, 5)
    store.record_gate.clear()
    task = asyncio.create_task(pool.run())
    try:
        await wait_until_async(lambda: pool.recorder.pending == 5, what="5 results waiting")
        first = min(await lease_ends(store, ids))

        async def renewed() -> bool:  # the heartbeat moved every lease past the first one
            return min(await lease_ends(store, ids)) > first

        await wait_until_true(renewed, what="leases renewed while the commit waits")
        await wait_until_async(lambda: runtime.clock.now() > first, what="the first lease over")
        taken = await store.queue.claim("other", runtime.clock.now(), lease=LEASE, limit=10)
        assert taken == []  # still ours: nobody else may send them again
        store.record_gate.set()

        async def all_sent() -> bool:
            return await statuses(store, ids) == [DeliveryStatus.SENT] * 5

        await wait_until_true(all_sent, what="all sent once the commit goes through")
    finally:
        store.record_gate.set()
        await pool.stop(grace=5)
        await task
        await runtime.aclose()
    assert len(fake_slack.payloads) == 5


def gated_pool(runtime: Runtime) -> tuple[Runtime, GatedStorage, WorkerPool]:
    """A pool of 16 slots on a `GatedStorage` over the runtime's database."""
    store = GatedStorage(runtime.db)
    return (
        runtime,
        store,
        WorkerPool(store, runtime.channels, runtime.clock, concurrency=16, lease=LEASE),
    )


async def test_stop_commits_results_already_handed_over(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack, database_url: str
) -> None:
    runtime, store, pool = gated_pool(make_runtime(slack_config(fake_slack), url=database_url))
    ids = await accept(runtime, 12)
    store.record_gate.clear()
    task = asyncio.create_task(pool.run())
    try:
        await wait_until_async(lambda: pool.recorder.pending == 12, what="12 results waiting")
        stopping = asyncio.create_task(pool.stop(grace=0))  # past the grace at once
        await wait_until_async(lambda: pool.attempts == 0, what="the attempts cancelled")
        assert not stopping.done()  # it waits for the pending commits...
        store.record_gate.set()
        await stopping  # ...and then releases nothing: every send was over
        await task
        final = await statuses(store, ids)
    finally:
        store.record_gate.set()
        await runtime.aclose()
    assert final == [DeliveryStatus.SENT] * 12
    assert len(fake_slack.payloads) == 12


async def test_a_backlog_is_claimed_in_batches(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack, database_url: str
) -> None:
    runtime, store, pool = gated_pool(make_runtime(slack_config(fake_slack), url=database_url))
    ids = await accept(runtime, 200)
    task = asyncio.create_task(pool.run())
    try:

        async def all_sent() -> bool:
            return await statuses(store, ids) == [DeliveryStatus.SENT] * 200

        await wait_until_true(all_sent, timeout=30, what="the backlog sent")
    finally:
        await pool.stop(grace=5)
        await task
        await runtime.aclose()
    assert sum(store.claims) == 200
    assert len(store.claims) <= 200 // 4 + 2  # at least a quarter of the slots per claim
    assert len(store.batches) < 200
    assert len(fake_slack.payloads) == 200


async def test_deliveries_claimed_while_stopping_are_given_back_unsent(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack, database_url: str
) -> None:
    """`stop` waits for the attempts it knows of; a claim still running then returns its
    deliveries after that. They must go back to the queue, not be sent by a pool that has
    stopped (whose results nobody would commit)."""
    runtime, store, pool = gated_pool(make_runtime(slack_config(fake_slack), url=database_url))
    ids = await accept(runtime, 3)
    store.claim_gate.clear()
    task = asyncio.create_task(pool.run())
    try:
        await asyncio.wait_for(store.claim_held.wait(), timeout=10)  # claimed, not returned
        await asyncio.wait_for(pool.stop(grace=5), timeout=10)
        store.claim_gate.set()
        await asyncio.wait_for(task, timeout=10)
        found = [await store.reads.get_delivery(i) for i in ids]
    finally:
        store.claim_gate.set()
        await runtime.aclose()
    assert fake_slack.payloads == []
    assert [(d.status, d.lease_owner, d.attempts) for d in found if d is not None] == [
        (DeliveryStatus.PENDING, None, 0)
    ] * 3
    assert store.batches == []  # no result was recorded
