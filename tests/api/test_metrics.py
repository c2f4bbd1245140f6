"""`/metrics` after a real run (in-process app, real SQLite, a fake Slack answering 503 and
200): every instrument's values, read back with prometheus_client's own text parser."""

from __future__ import annotations

from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from deskbell.models import DeliveryStatus
from deskbell.wiring import Runtime
from tests.conftest import running_app, statuses, wait_for_request
from tests.fakes.slack import FakeSlack, Reply

CONFIG = """
channels:
  ok-slack:
    type: slack
    webhook_url: {ok}
    retry: {{initial: 0.05, max: 0.1, max_attempts: 5}}
  bad-slack:
    type: slack
    webhook_url: {bad}
    retry: {{max_attempts: 1}}
    breaker: {{failures: 1, cool_down: 600}}
routes:
  - match: {{topic: sales}}
    to: [ok-slack]
  - match: {{topic: pricing}}
    to: [bad-slack]
"""
KEY = "r" * 40


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    key = (name, frozenset(labels.items()))
    assert key in found, f"no sample {name}{labels}: {[k for k in found if k[0] == name]}"
    return found[key]


async def post(client: httpx.AsyncClient, topic: str, **headers: str) -> httpx.Response:
    return await client.post(
        "/v1/assistance-requests", json={"topic": topic, "description": "x"}, headers=headers
    )


async def test_metrics_after_sent_retried_and_dead(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack
) -> None:
    with FakeSlack() as bad:
        fake_slack.reply_next(Reply(503))  # ok-slack: one transient failure, then 200
        bad.reply_with(503)  # bad-slack: one attempt allowed, so dead; its breaker opens
        runtime = make_runtime(CONFIG.format(ok=fake_slack.url, bad=bad.url))
        async with running_app(runtime) as client:
            before = samples((await client.get("/metrics")).text)
            sales = await post(client, "sales")
            pricing = await post(client, "pricing", **{"Idempotency-Key": "k1"})
            repeat = await post(client, "pricing", **{"Idempotency-Key": "k1"})
            unknown = await post(client, "nope")
            assert [r.status_code for r in (sales, pricing, repeat, unknown)] == [202] * 3 + [422]
            for answer, status in ((sales, "sent"), (pricing, "dead")):
                await wait_for_request(
                    runtime,
                    answer.json()["id"],
                    lambda s, st=status: all(v.value == st for v in statuses(s).values()),
                )
            assert (await client.get(sales.headers["location"])).status_code == 200
            scrape = await client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain; version=0.0.4")
    found = samples(scrape.text)

    # Series exist from the start, at zero.
    assert value(before, "deskbell_requests_total", topic="sales", outcome="accepted") == 0
    assert value(before, "deskbell_deliveries_total", channel="bad-slack", outcome="dead") == 0
    assert value(before, "deskbell_channel_breaker_open", channel="bad-slack") == 0

    requests = "deskbell_requests_total"
    assert value(found, requests, topic="sales", outcome="accepted") == 1
    assert value(found, requests, topic="pricing", outcome="accepted") == 1
    assert value(found, requests, topic="pricing", outcome="duplicate") == 1
    assert value(found, requests, topic="other", outcome="rejected") == 1  # not "nope"
    assert not any(dict(labels).get("topic") == "nope" for _, labels in found)

    deliveries = "deskbell_deliveries_total"
    assert value(found, deliveries, channel="ok-slack", outcome="retried") == 1
    assert value(found, deliveries, channel="ok-slack", outcome="sent") == 1
    assert value(found, deliveries, channel="ok-slack", outcome="dead") == 0
    assert value(found, deliveries, channel="bad-slack", outcome="dead") == 1
    assert value(found, deliveries, channel="bad-slack", outcome="sent") == 0

    attempts = "deskbell_delivery_attempt_seconds_count"
    assert value(found, attempts, channel="ok-slack") == 2
    assert value(found, attempts, channel="bad-slack") == 1
    latency = "deskbell_delivery_latency_seconds"
    assert value(found, f"{latency}_count", channel="ok-slack") == 1
    assert value(found, f"{latency}_count", channel="bad-slack") == 0
    assert 0 < value(found, f"{latency}_sum", channel="ok-slack") < 10

    assert value(found, "deskbell_deliveries_pending", channel="ok-slack") == 0
    assert value(found, "deskbell_oldest_pending_seconds", channel="ok-slack") == 0
    assert value(found, "deskbell_channel_breaker_open", channel="bad-slack") == 1
    assert value(found, "deskbell_channel_breaker_open", channel="ok-slack") == 0

    http = "deskbell_http_request_duration_seconds_count"
    route = "/v1/assistance-requests"
    assert value(found, http, method="POST", route=route, status="202") == 3
    assert value(found, http, method="POST", route=route, status="422") == 1
    assert value(found, http, method="GET", route="/metrics", status="200") == 1
    detail = "/v1/assistance-requests/{request_id}"
    assert value(found, http, method="GET", route=detail, status="200") == 1


async def test_backlog_gauges_count_unsent_deliveries(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    async with running_app(runtime, start_workers=False) as client:
        for _ in range(3):
            assert (await post(client, "sales")).status_code == 202
        found = samples((await client.get("/metrics")).text)
        stored = await runtime.store.reads.list_requests(status=DeliveryStatus.PENDING)
    assert len(stored[0]) == 3
    assert value(found, "deskbell_deliveries_pending", channel="console") == 3
    assert 0 <= value(found, "deskbell_oldest_pending_seconds", channel="console") < 60


async def test_metrics_need_the_read_scope_unless_open(
    make_runtime: Callable[..., Runtime],
) -> None:
    async with running_app(make_runtime(api_keys=f"{KEY}:read")) as client:
        assert (await client.get("/metrics")).status_code == 401
        answer = await client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
        assert answer.status_code == 200
        assert "deskbell_requests_total" in answer.text
    async with running_app(make_runtime(api_keys=f"{KEY}:ingest")) as client:
        refused = await client.get("/metrics", headers={"Authorization": f"Bearer {KEY}"})
        assert refused.status_code == 403
    runtime = make_runtime(api_keys=f"{KEY}:read", metrics_open=True)
    async with running_app(runtime) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/v1/topics")).status_code == 401  # only /metrics is open
