"""The worker's log lines during trouble (delivery/worker.py, streaks.py, notify.py): one line
per change of state, a counter for repeats.

- `lease_lost` only for a real loss: a heartbeat whose renewal raced our own commit of the
  result (the delivery is no longer in flight because we recorded it) must stay quiet, while
  an attempt still sending whose lease another owner took is reported.
- A failing claim logs one warning (one line, no traceback) for the whole outage, counts every
  try in `deskbell_worker_errors_total{operation="claim"}`, and one line when it recovers. The
  failure is real: the deliveries table is renamed away and back.
- The PostgreSQL listener logs losing its connection and reconnecting, once each.

The stores below are the real storage; they only hold a call until the test opens a gate."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs

from deskbell.delivery.notify import asyncpg_dsn, listen_for_due_work
from deskbell.delivery.streaks import FailureStreaks
from deskbell.delivery.worker import WorkerPool
from deskbell.models import AssistanceRequestIn, DeliveryStatus
from deskbell.routing.router import Target
from deskbell.storage.tables import deliveries
from deskbell.wiring import Runtime
from tests.fakes import wait_until_async, wait_until_true
from tests.fakes.slack import FakeSlack
from tests.gated import GatedStorage

LEASE = timedelta(seconds=1.5)  # a heartbeat every 0.5 s


def slack_config(slack: FakeSlack) -> str:
    return f"""
channels:
  sales-slack:
    type: slack
    webhook_url: {slack.url}
    timeout: 30
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
"""


async def accept(runtime: Runtime, n: int, channel: str = "sales-slack") -> list[str]:
    ids = []
    for i in range(n):
        payload = AssistanceRequestIn(topic="sales", description=f"request {i}")
        stored, _ = await runtime.store.requests.accept_one(
            payload, [Target(channel)], runtime.clock.now()
        )
        ids.append(stored.deliveries[0].id)
    return ids


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == name]


async def test_a_renewal_racing_our_own_commit_is_not_a_lost_lease(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack
) -> None:
    runtime = make_runtime(slack_config(fake_slack))
    store = GatedStorage(runtime.db)
    pool = WorkerPool(store, runtime.channels, runtime.clock, concurrency=8, lease=LEASE)
    store.record_gate.clear()
    store.renew_gate.clear()
    ids = await accept(runtime, 3)
    with capture_logs() as logs:
        task = asyncio.create_task(pool.run())
        try:
            await wait_until_async(lambda: pool.recorder.pending == 3, what="3 results waiting")
            # The heartbeat has taken its snapshot of the held deliveries and waits...
            await asyncio.wait_for(store.renew_waiting.wait(), timeout=5)
            store.record_gate.set()  # ...while our results commit...

            async def all_sent() -> bool:
                found = [await store.reads.get_delivery(i) for i in ids]
                return all(d is not None and d.status is DeliveryStatus.SENT for d in found)

            await wait_until_true(all_sent, what="the results committed")
            store.renew_gate.set()  # ...and then renews: none of them is in flight any more
            await wait_until_async(lambda: bool(store.renewed), what="the renewal done")
        finally:
            store.record_gate.set()
            store.renew_gate.set()
            await pool.stop(grace=5)
            await task
            await runtime.aclose()
    asked, kept = store.renewed[0]
    assert (asked, kept) == (set(ids), set())  # the race did happen
    assert events(logs, "lease_lost") == []


async def test_a_lease_taken_while_sending_is_reported_lost(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack
) -> None:
    fake_slack.delay = 30  # the send hangs (stop() cuts it short)
    runtime = make_runtime(slack_config(fake_slack))
    pool = WorkerPool(runtime.store, runtime.channels, runtime.clock, lease=LEASE)
    (delivery_id,) = await accept(runtime, 1)
    with capture_logs() as logs:
        task = asyncio.create_task(pool.run())
        try:
            await fake_slack.wait_for_requests_async(1)
            async with runtime.db.writer.begin() as conn:  # another worker took it over
                await conn.execute(
                    deliveries.update()
                    .where(deliveries.c.id == delivery_id)
                    .values(lease_owner="other")
                )
            await wait_until_async(
                lambda: bool(events(logs, "lease_lost")), what="lease_lost logged"
            )
        finally:
            fake_slack.stop()
            await pool.stop(grace=0)
            await task
            await runtime.aclose()
    (lost,) = {line["delivery_id"] for line in events(logs, "lease_lost")}
    assert lost == delivery_id


async def rename(runtime: Runtime, old: str, new: str) -> None:
    async with runtime.db.writer.begin() as conn:
        await conn.execute(sa.text(f"ALTER TABLE {old} RENAME TO {new}"))


async def test_a_failing_claim_logs_once_counts_the_rest_and_logs_recovery(
    make_runtime: Callable[..., Runtime], database_url: str
) -> None:
    runtime = make_runtime(url=database_url, poll_seconds=0.01)
    pool = runtime.workers
    assert isinstance(pool, WorkerPool)
    errors = runtime.metrics.registry

    def claim_errors() -> float:
        value = errors.get_sample_value("deskbell_worker_errors_total", {"operation": "claim"})
        return value or 0.0

    assert claim_errors() == 0  # the series exists from the start
    await rename(runtime, "deliveries", "deliveries_away")
    with capture_logs() as logs:
        runtime.start_workers()
        try:
            await wait_until_async(lambda: claim_errors() >= 5, what="5 failed claims")
            await rename(runtime, "deliveries_away", "deliveries")
            (delivery_id,) = await accept(runtime, 1, channel="console")

            async def sent() -> bool:
                found = await runtime.store.reads.get_delivery(delivery_id)
                return found is not None and found.status is DeliveryStatus.SENT

            await wait_until_true(sent, what="delivered after the recovery")
        finally:
            await runtime.aclose()
    (failed,) = events(logs, "claim_failed")
    assert failed["log_level"] == "warning"
    assert "exc_info" not in failed
    assert "\n" not in failed["error"]
    assert "deliveries" in failed["error"]
    assert len(failed["error"]) <= 300
    (recovered,) = events(logs, "claim_recovered")
    assert recovered["failures"] >= 5
    assert recovered["failures"] <= claim_errors()


@pytest.mark.postgres
async def test_the_listener_logs_losing_and_regaining_its_connection(postgres_url: str) -> None:
    stopping = asyncio.Event()
    wakes: list[int] = []
    streaks = FailureStreaks()
    with capture_logs() as logs:
        listener = asyncio.create_task(
            listen_for_due_work(
                postgres_url,
                lambda: wakes.append(1),
                stopping,
                streaks=streaks,
                first_backoff=0.05,
            )
        )
        admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
        try:
            await wait_until_async(lambda: len(wakes) == 1, what="listening")
            killed = await admin.fetchval(
                """SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE datname = current_database() AND query LIKE 'LISTEN%'"""
            )
            assert killed == 1
            await wait_until_async(lambda: len(wakes) == 2, what="listening again")
        finally:
            stopping.set()
            await asyncio.wait_for(listener, timeout=10)
            await admin.close()
    assert [line["event"] for line in logs if line["event"].startswith("listen")] == [
        "listen_lost",
        "listen_reconnected",
    ]


async def test_a_listener_that_cannot_connect_warns_once() -> None:
    stopping = asyncio.Event()
    streaks = FailureStreaks()
    with capture_logs() as logs:
        listener = asyncio.create_task(
            listen_for_due_work(
                "postgresql+asyncpg://nobody@127.0.0.1:1/none",
                lambda: None,
                stopping,
                streaks=streaks,
                first_backoff=0.01,
            )
        )
        try:
            await wait_until_async(lambda: streaks.failing("listen") >= 4, what="4 failures")
        finally:
            stopping.set()
            await asyncio.wait_for(listener, timeout=10)
    warnings = [line for line in logs if line["log_level"] == "warning"]
    assert [line["event"] for line in warnings] == ["listen_failed"]
