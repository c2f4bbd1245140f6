"""Time to `dead` does not depend on the breaker (delivery/circuits.py): with a channel down
and its breaker open, its deliveries are still claimed, fail fast unsent, and go dead (and to
their fallback) on their own retry policy's schedule; the fail-fast attempts never reach the
peer and never reopen or extend the breaker; after the cool-down one probe is really sent.

The real app and worker pool over SQLite, a fake Slack answering 503, a console fallback.
Policies are short (tens of milliseconds) and the cool-down long, so under the old rule (an
open channel is not claimed) nothing here would go dead for an hour."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

import httpx
import structlog
from structlog.testing import capture_logs

from deskbell.delivery.breaker import BreakerState
from deskbell.delivery.worker import WorkerPool
from deskbell.models import DeliveryStatus, Outcome, StoredRequest
from deskbell.wiring import Runtime
from tests.conftest import running_app
from tests.fakes import wait_until_async, wait_until_true
from tests.fakes.slack import FakeSlack
from tests.ledger import attempts_of

N = 50
MAX_ATTEMPTS = 4
MAX_CONCURRENCY = 4
FAILURES = 3


def config(slack: FakeSlack, *, cool_down: float, max_attempts: int = MAX_ATTEMPTS) -> str:
    return f"""
channels:
  sales-slack:
    type: slack
    webhook_url: {slack.url}
    timeout: 2
    max_concurrency: {MAX_CONCURRENCY}
    retry: {{initial: 0.05, max: 0.2, max_attempts: {max_attempts}}}
    breaker: {{failures: {FAILURES}, cool_down: {cool_down}}}
  backup:
    type: console
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
    fallback: backup
"""


async def post_many(client: httpx.AsyncClient, n: int) -> list[str]:
    ids = []
    for i in range(n):
        answer = await client.post(
            "/v1/assistance-requests",
            json={"topic": "sales", "description": f"request {i}"},
            headers={"X-Request-ID": f"ingest-{i}"},
        )
        assert answer.status_code == 202, answer.text
        ids.append(str(answer.json()["id"]))
    return ids


async def requests_of(runtime: Runtime, ids: list[str]) -> list[StoredRequest]:
    found = [await runtime.store.reads.get_request(i) for i in ids]
    return [r for r in found if r is not None]


def dead_and_fallen_back(stored: StoredRequest) -> bool:
    statuses = {d.channel: d.status for d in stored.deliveries}
    return statuses == {"sales-slack": DeliveryStatus.DEAD, "backup": DeliveryStatus.SENT}


def events(logs: Sequence[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line["event"] == name]


async def test_open_breaker_deliveries_go_dead_on_their_policy_and_fall_back(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack
) -> None:
    fake_slack.reply_with(503)
    runtime = make_runtime(config(fake_slack, cool_down=3600))
    pool = runtime.workers
    assert isinstance(pool, WorkerPool)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with running_app(runtime) as client:
            started = time.monotonic()
            ids = await post_many(client, N)

            async def all_dead() -> bool:
                return all(dead_and_fallen_back(r) for r in await requests_of(runtime, ids))

            # The policy allows at most 0.05 + 0.1 + 0.2 s of backoff; the cool-down is 1 h.
            await wait_until_true(all_dead, timeout=20, what="all dead with fallbacks")
            elapsed = time.monotonic() - started
            stored = await requests_of(runtime, ids)
            histories = [await attempts_of(runtime.store, r.deliveries[0].id) for r in stored]
            breaker = pool.circuits.get("sales-slack")
            assert breaker is not None
            metrics = runtime.metrics.registry
            assert breaker.state is BreakerState.OPEN

    assert elapsed < 20
    assert all(len(h) == MAX_ATTEMPTS for h in histories)
    assert all(a.outcome is Outcome.TRANSIENT for h in histories for a in h)
    # Only the 3 failures that opened it and the sends already under way then (at most
    # max_concurrency - 1 more) reached the peer; the rest failed fast.
    assert FAILURES <= len(fake_slack.requests) <= FAILURES + MAX_CONCURRENCY - 1
    failed_fast = [a for h in histories for a in h if "circuit open until" in (a.error or "")]
    assert len(failed_fast) == N * MAX_ATTEMPTS - len(fake_slack.requests)
    # Opened once; the fail-fast attempts neither reopened it nor moved its cool-down.
    (opened,) = events(logs, "breaker_opened")
    assert opened["open_until"] == breaker.open_until.isoformat()  # type: ignore[union-attr]
    changes = "deskbell_channel_breaker_changes_total"
    for change, count in (("opened", 1), ("reopened", 0), ("closed", 0)):
        labels = {"channel": "sales-slack", "change": change}
        assert metrics.get_sample_value(changes, labels) == count
    short = metrics.get_sample_value(
        "deskbell_delivery_short_circuits_total", {"channel": "sales-slack"}
    )
    assert short == len(failed_fast)
    slack = {"channel": "sales-slack"}
    dead = metrics.get_sample_value("deskbell_deliveries_total", {**slack, "outcome": "dead"})
    assert dead == N
    sends = metrics.get_sample_value("deskbell_delivery_attempt_seconds_count", slack)
    assert sends == len(fake_slack.requests)  # the duration histogram is about real sends
    # The breaker's and the recorder's lines are not any one request's: only the request's
    # own lines and its attempts' carry its http_request_id.
    assert "http_request_id" not in opened
    tagged = {line["event"] for line in logs if "http_request_id" in line}
    # (request_accepted is one of the request's own lines, logged when INFO is on)
    assert "delivery_attempt" in tagged
    assert tagged <= {"delivery_attempt", "request_accepted"}, tagged
    attempts = events(logs, "delivery_attempt")
    assert attempts
    assert all(line["http_request_id"].startswith("ingest-") for line in attempts)


async def test_after_the_cool_down_one_probe_is_sent_and_closes_it(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack
) -> None:
    fake_slack.reply_with(503)
    runtime = make_runtime(config(fake_slack, cool_down=0.5, max_attempts=1000))
    pool = runtime.workers
    assert isinstance(pool, WorkerPool)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        async with running_app(runtime) as client:
            ids = await post_many(client, 10)

            def failing_fast() -> bool:
                lines = events(logs, "delivery_attempt")
                return any("(not sent)" in (line["error"] or "") for line in lines)

            await wait_until_async(failing_fast, what="attempts failing fast")
            fake_slack.reply_with(200)  # the peer is back; only a probe can find out

            async def all_sent() -> bool:
                stored = await requests_of(runtime, ids)
                return all(r.deliveries[0].status is DeliveryStatus.SENT for r in stored)

            await wait_until_true(all_sent, timeout=10, what="all sent after the probe")
            stored = await requests_of(runtime, ids)
            history = [
                a for r in stored for a in await attempts_of(runtime.store, r.deliveries[0].id)
            ]
    answered = Counter(r.status for r in fake_slack.requests)
    assert answered[200] == 10  # each sent once
    # Every other request Slack saw is a real failed attempt; no fail-fast one reached it.
    failed_fast = [a for a in history if "(not sent)" in (a.error or "")]
    refused = [a for a in history if a.outcome is Outcome.TRANSIENT and a not in failed_fast]
    assert answered[503] == len(refused)
    assert failed_fast
    assert len(events(logs, "breaker_opened")) == 1
    (closed,) = events(logs, "breaker_closed")
    assert "http_request_id" not in closed
