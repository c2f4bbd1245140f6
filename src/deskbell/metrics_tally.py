"""`RouteTally`: one hot route's request counts and durations, added to the Prometheus
instruments in bulk rather than one request at a time.

On the ingest path `Counter.inc` and `Histogram.observe` cost 2.3 us a request: each takes a
lock, and `observe` checks the histogram and walks its buckets in Python. Adding one to a
dict entry and to a bucket found by `bisect` costs a sixth of that. The totals go into the
instruments when a scrape of this process renders them (`Metrics.render` flushes first, so
it never lags), when the runtime closes, and at most FLUSH_SECONDS after a request, so that
in a multiprocess setup another process's `/metrics`, which reads this process's files, is
at most that far behind.

Many observations can only be added to a prometheus_client histogram through its value
objects (`_sum` and `_buckets`, the ones `observe` increments); prometheus-client is pinned,
and tests/unit/test_metrics_tally.py holds the result to what `observe` makes.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable

from prometheus_client import Counter, Histogram

FLUSH_SECONDS = 1.0


class RouteTally:
    def __init__(
        self,
        requests: Counter,
        seconds: Histogram,
        method: str,
        route: str,
        topic_label: Callable[[str | None], str],
    ) -> None:
        self._requests = requests
        self._seconds = seconds
        self._method = method
        self._route = route
        self._topic_label = topic_label
        self._bounds = seconds._upper_bounds  # the histogram's own, +Inf last
        self._counts: dict[tuple[str, str], int] = {}
        self._durations: dict[int, list[float]] = {}  # status -> [sum, count per bucket...]
        self._flush_due = False

    def record(self, topic: str | None, outcome: str, status: int, seconds: float) -> None:
        """One request: on the event loop, whose timer then flushes it."""
        key = (self._topic_label(topic), outcome)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        durations = self._durations.get(status)
        if durations is None:
            durations = self._durations[status] = [0.0] * (1 + len(self._bounds))
        durations[0] += seconds
        durations[1 + bisect_left(self._bounds, seconds)] += 1  # observe's `amount <= bound`
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Add what was recorded since the last flush to the instruments."""
        self._flush_due = False
        counts, self._counts = self._counts, {}
        for (topic, outcome), count in counts.items():
            self._requests.labels(topic, outcome).inc(count)
        durations, self._durations = self._durations, {}
        for status, (total, *buckets) in durations.items():
            child = self._seconds.labels(self._method, self._route, str(status))
            child._sum.inc(total)
            for value, observed in zip(child._buckets, buckets, strict=True):
                if observed:
                    value.inc(observed)
