"""`RouteTally` adds a route's counts and durations to the instruments in bulk: the result must
be what `inc` and `observe` one request at a time make, and it must reach the instruments
without a scrape."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from prometheus_client import generate_latest

from deskbell.metrics import HTTP_BUCKETS, Metrics
from deskbell.metrics_tally import FLUSH_SECONDS

ROUTE = "/v1/assistance-requests"
# Every bucket, both sides of each bound and on it (`observe` counts `amount <= bound`), and
# past the last finite one (+Inf).
DURATIONS = [b * f for b in HTTP_BUCKETS for f in (0.5, 1.0, 1.5)] + [0.0, 3600.0]
REQUESTS = [
    ("sales", "accepted", 202),
    ("sales", "duplicate", 202),
    ("no-such-topic", "rejected", 422),  # counted as topic "other"
    (None, "failed", 503),
]


def exposition(metrics: Metrics) -> list[str]:
    """The text of both instruments, without the `_created` timestamps that differ."""
    text = generate_latest(metrics.registry).decode()
    return sorted(line for line in text.splitlines() if "_created" not in line)


async def test_bulk_counts_equal_counting_each_request() -> None:
    tallied, counted = Metrics(topics=["sales"]), Metrics(topics=["sales"])
    tally = tallied.tally("POST", ROUTE)
    for index, seconds in enumerate(DURATIONS):
        topic, outcome, status = REQUESTS[index % len(REQUESTS)]
        tally.record(topic, outcome, status, seconds)
        counted.requests.labels(counted.topic_label(topic), outcome).inc()
        counted.http_seconds.labels("POST", ROUTE, str(status)).observe(seconds)
    assert exposition(tallied) != exposition(counted)  # nothing reached the instruments yet
    tallied.flush()
    assert exposition(tallied) == exposition(counted)
    rejected = {"topic": "other", "outcome": "rejected"}
    assert (tallied.registry.get_sample_value("deskbell_requests_total", rejected) or 0) > 0


async def test_what_is_recorded_reaches_the_instruments_within_the_flush_interval() -> None:
    metrics = Metrics(topics=["sales"])
    metrics.tally("POST", ROUTE).record("sales", "accepted", 202, 0.003)
    sample = ("deskbell_requests_total", {"topic": "sales", "outcome": "accepted"})
    deadline = time.monotonic() + FLUSH_SECONDS + 5
    while metrics.registry.get_sample_value(*sample) != 1.0:
        assert time.monotonic() < deadline, "not flushed"
        await asyncio.sleep(0.05)
    seconds = metrics.registry.get_sample_value(
        "deskbell_http_request_duration_seconds_bucket",
        {"method": "POST", "route": ROUTE, "status": "202", "le": "0.005"},
    )
    assert seconds == 1.0


async def test_render_flushes_first() -> None:
    metrics = Metrics(topics=["sales"])
    metrics.tally("POST", ROUTE).record("sales", "accepted", 202, 0.003)
    text = metrics.render({}, datetime.now(UTC)).decode()
    assert 'deskbell_requests_total{outcome="accepted",topic="sales"} 1.0' in text
