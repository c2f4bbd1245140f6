"""Every Prometheus instrument deskbell has, and the `/metrics` text (docs/operations.md).

Why one object per runtime rather than module-level instruments: a test builds many runtimes
in one process, and each must count from zero on its own registry (no globals, DESIGN).

Labels are bounded: `topic` is one of the active config's topics or "other" (a `default:`
route accepts any topic, and a label per caller-chosen string would grow without limit),
`channel` is a configured channel name, `outcome` is from the small tuples below, `route` is
the route template. Every series that can be known at start is created at start, so a
dashboard shows zeros rather than gaps.

Several processes (`serve --no-workers` plus `deskbell worker`s, on one host or sharing a
volume): set PROMETHEUS_MULTIPROC_DIR to an empty directory they all can write. Counters and
histograms then live in per-process files there and any process's `/metrics` sums them all;
the breaker gauge shows the highest value among live processes. The backlog gauges are read
from the database at scrape time, so they are right whichever process answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from deskbell.metrics_tally import RouteTally
from deskbell.models import DeliveryStatus

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"
REQUEST_OUTCOMES = ("accepted", "duplicate", "rejected", "failed")
DELIVERY_OUTCOMES = ("sent", "retried", "dead")
_OUTCOME_OF_STATUS = {
    DeliveryStatus.SENT: "sent",
    DeliveryStatus.RETRYING: "retried",
    DeliveryStatus.DEAD: "dead",
}
ATTEMPT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60)
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600, 86400)
WORKER_OPERATIONS = ("claim", "lease_renew", "release", "listen")
BREAKER_CHANGES = ("opened", "reopened", "closed")
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# From accept to a person's claim (SPEC §9): seconds to a day.
CLAIM_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)

Backlog = Mapping[str, tuple[int, datetime]]
"""channel -> (unsettled deliveries, creation time of the oldest); `Store.backlog()`."""


class Metrics:
    def __init__(self, *, topics: Iterable[str] = (), channels: Iterable[str] = ()) -> None:
        self.multiprocess_dir = os.environ.get(MULTIPROC_ENV) or None
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.topics = frozenset(topics)
        self._tallies: list[RouteTally] = []
        self.channels = tuple(channels)
        self.requests = Counter(
            "deskbell_requests",
            "Assistance requests posted to the ingest endpoint, by topic and outcome "
            "(accepted, duplicate: an idempotent repeat, rejected: 4xx, failed: 5xx).",
            ["topic", "outcome"],
            registry=r,
        )
        self.deliveries = Counter(
            "deskbell_deliveries",
            "Delivery attempts by what they led to: sent, retried (a transient failure, "
            "another attempt is scheduled) or dead (given up).",
            ["channel", "outcome"],
            registry=r,
        )
        self.attempt_seconds = Histogram(
            "deskbell_delivery_attempt_seconds",
            "Duration of one delivery attempt (the channel's send).",
            ["channel"],
            buckets=ATTEMPT_BUCKETS,
            registry=r,
        )
        self.latency_seconds = Histogram(
            "deskbell_delivery_latency_seconds",
            "From the request's accept (the 202) to its delivery being sent.",
            ["channel"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.breaker_open = Gauge(
            "deskbell_channel_breaker_open",
            "1 while the channel's circuit breaker is open or probing (in any live process).",
            ["channel"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.breaker_changes = Counter(
            "deskbell_channel_breaker_changes",
            "Circuit breaker changes: opened (after consecutive failures), reopened (a failed "
            "probe), closed.",
            ["channel", "change"],
            registry=r,
        )
        self.short_circuits = Counter(
            "deskbell_delivery_short_circuits",
            "Attempts failed fast, not sent, because the channel's breaker was open; each "
            "counts against the delivery's retry policy like a transient failure.",
            ["channel"],
            registry=r,
        )
        self.worker_errors = Counter(
            "deskbell_worker_errors",
            "Failed tries of a worker's background operations (claim, lease_renew, release, "
            "listen); only the first of a streak is logged.",
            ["operation"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "deskbell_http_request_duration_seconds",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.time_to_claim_seconds = Histogram(
            "deskbell_time_to_claim_seconds",
            "From a request's accept to a person claiming it (SPEC §9), by topic.",
            ["topic"],
            buckets=CLAIM_BUCKETS,
            registry=r,
        )
        for topic in (*sorted(self.topics), OTHER):
            for outcome in REQUEST_OUTCOMES:
                self.requests.labels(topic, outcome)
            self.time_to_claim_seconds.labels(topic)
        for channel in self.channels:
            for outcome in DELIVERY_OUTCOMES:
                self.deliveries.labels(channel, outcome)
            self.attempt_seconds.labels(channel)
            self.latency_seconds.labels(channel)
            self.short_circuits.labels(channel)
            for change in BREAKER_CHANGES:
                self.breaker_changes.labels(channel, change)
        for operation in WORKER_OPERATIONS:
            self.worker_errors.labels(operation)
        self.config_version = Gauge(
            "deskbell_config_version",
            "The stored config version this process runs (SPEC §8); 0 before it knows one. "
            "With several processes, one series per live process (label pid).",
            multiprocess_mode="liveall",
            registry=r,
        )

    def tally(self, method: str, route: str) -> RouteTally:
        """A hot route's bulk counting (metrics_tally.py), flushed by `flush` and `render`."""
        tally = RouteTally(self.requests, self.http_seconds, method, route, self.topic_label)
        self._tallies.append(tally)
        return tally

    def flush(self) -> None:
        for tally in self._tallies:
            tally.flush()

    def topic_label(self, topic: str | None) -> str:
        return topic if topic is not None and topic in self.topics else OTHER

    def attempt(
        self, channel: str, status: DeliveryStatus, seconds: float, latency: float | None
    ) -> None:
        """One recorded attempt; `latency` (accept to sent) only when it was sent."""
        self.attempt_seconds.labels(channel).observe(max(0.0, seconds))
        outcome = _OUTCOME_OF_STATUS.get(status)
        if outcome is not None:
            self.deliveries.labels(channel, outcome).inc()
        if latency is not None:
            self.latency_seconds.labels(channel).observe(max(0.0, latency))

    def breaker(self, channel: str, is_open: bool) -> None:
        self.breaker_open.labels(channel).set(1 if is_open else 0)

    def breaker_changed(self, channel: str, change: str) -> None:
        """One of `BREAKER_CHANGES`."""
        self.breaker_changes.labels(channel, change).inc()

    def short_circuit(self, channel: str, status: DeliveryStatus) -> None:
        """An attempt failed fast (breaker open), recorded with `status`: counted as what it
        led to, but not in the attempt duration histogram, which is about real sends."""
        self.short_circuits.labels(channel).inc()
        outcome = _OUTCOME_OF_STATUS.get(status)
        if outcome is not None:
            self.deliveries.labels(channel, outcome).inc()

    def claimed(self, topic: str, seconds: float) -> None:
        """A request claimed `seconds` after its accept (counted once, by the winner)."""
        self.time_to_claim_seconds.labels(self.topic_label(topic)).observe(max(0.0, seconds))

    def follow_config(self, topics: Iterable[str], channels: Iterable[str], version: int) -> None:
        """A new config version is active in this process (live.py): topic labels follow it,
        and the series of its new topics and channels exist from now on, as at start."""
        self.config_version.set(version)
        added_topics = set(topics) - self.topics
        self.topics = frozenset(topics)
        for topic in sorted(added_topics):
            for outcome in REQUEST_OUTCOMES:
                self.requests.labels(topic, outcome)
        added = [name for name in channels if name not in self.channels]
        self.channels = (*self.channels, *added)  # old names stay: their counts remain
        for channel in added:
            for outcome in DELIVERY_OUTCOMES:
                self.deliveries.labels(channel, outcome)
            self.attempt_seconds.labels(channel)
            self.latency_seconds.labels(channel)
            self.short_circuits.labels(channel)
            for change in BREAKER_CHANGES:
                self.breaker_changes.labels(channel, change)

    def worker_error(self, operation: str) -> None:
        """One of `WORKER_OPERATIONS`."""
        self.worker_errors.labels(operation).inc()

    def render(self, backlog: Backlog, now: datetime, *, unclaimed: int | None = None) -> bytes:
        """The text exposition: the instruments (this process's, or every process's in
        multiprocess mode) and the backlog gauges from the snapshot the caller read
        (`unclaimed`: requests still `waiting`, read at scrape time; None: not shown)."""
        self.flush()
        if self.multiprocess_dir is not None:
            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
            own = generate_latest(merged)
        else:
            own = generate_latest(self.registry)
        snapshot = CollectorRegistry()
        snapshot.register(_BacklogCollector(backlog, self.channels, now))
        if unclaimed is not None:
            snapshot.register(_UnclaimedCollector(unclaimed))
        return own + generate_latest(snapshot)


class _UnclaimedCollector(Collector):
    """`deskbell_requests_unclaimed`: a count read from the database at scrape time (the
    handoff index), so it is right whichever process answers."""

    def __init__(self, count: int) -> None:
        self.count = count

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "deskbell_requests_unclaimed",
            "Requests nobody has claimed yet (handoff state waiting).",
            value=self.count,
        )


class _BacklogCollector(Collector):
    """Gauges computed from one read of the store, not kept in the process."""

    def __init__(self, backlog: Backlog, channels: Iterable[str], now: datetime) -> None:
        self.backlog = backlog
        self.channels = sorted({*channels, *backlog})
        self.now = now

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "deskbell_deliveries_pending",
            "Deliveries not settled yet (pending, retrying or in flight).",
            labels=["channel"],
        )
        oldest = GaugeMetricFamily(
            "deskbell_oldest_pending_seconds",
            "Age of the oldest unsettled delivery; 0 when there is none.",
            labels=["channel"],
        )
        for channel in self.channels:
            count, since = self.backlog.get(channel, (0, self.now))
            pending.add_metric([channel], count)
            oldest.add_metric([channel], max(0.0, (self.now - since).total_seconds()))
        yield pending
        yield oldest


def prepare_multiprocess() -> None:
    """Name each process's metric files `host-pid` instead of `pid`, before any instrument
    exists: containers sharing a PROMETHEUS_MULTIPROC_DIR volume all run as pid 1, and two
    processes writing one file would corrupt it. A no-op without the variable."""
    if not os.environ.get(MULTIPROC_ENV):
        return
    import socket

    from prometheus_client import values

    host = socket.gethostname().replace("_", "-")
    make = values.MultiProcessValue
    values.ValueClass = make(lambda: f"{host}-{os.getpid()}")  # type: ignore[no-untyped-call]  # untyped upstream
