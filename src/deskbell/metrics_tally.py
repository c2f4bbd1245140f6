"""`RouteTally`: one hot route's requests, noted as they end and handed to the Prometheus
instruments in bulk, off the request's path.

A request only appends a tuple. `flush` adds them: one `Counter.inc(n)` per topic and
outcome, and per status what `observe` would do for each request (`_observe_each`: the
histogram child's sum one amount at a time in arrival order, each bucket its count at once;
prometheus_client's own fields, as `observe` uses them), so the totals are exactly what
counting each request at once would make. It runs when a scrape of this process renders the metrics
(`Metrics.render` flushes first, so a scrape never lags), when the runtime closes, and at
most FLUSH_SECONDS after a request, so that in a multiprocess setup another process's
`/metrics`, which reads this process's files, is at most that far behind.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable
from operator import itemgetter

from prometheus_client import Counter, Histogram

FLUSH_SECONDS = 1.0
_TOPIC_OUTCOME = itemgetter(0, 1)


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
        self._pending: list[tuple[str | None, str, int, float]] = []
        self._flush_due = False

    def record(self, topic: str | None, outcome: str, status: int, seconds: float) -> None:
        """One request: on the event loop, whose timer then flushes it."""
        self._pending.append((topic, outcome, status, seconds))
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)

    def flush(self) -> None:
        """Add what was recorded since the last flush to the instruments."""
        self._flush_due = False
        pending, self._pending = self._pending, []
        # Counted by topic as sent (in C), then labelled once per topic rather than per request.
        counts: Tally[tuple[str, str]] = Tally()
        for (topic, outcome), count in Tally(map(_TOPIC_OUTCOME, pending)).items():
            counts[self._topic_label(topic), outcome] += count
        for (label, outcome), count in counts.items():
            self._requests.labels(label, outcome).inc(count)
        by_status: dict[int, list[float]] = {}
        for _, _, status, seconds in pending:
            found = by_status.get(status)
            if found is None:
                found = by_status[status] = []
            found.append(seconds)
        for status, amounts in by_status.items():
            _observe_each(self._seconds.labels(self._method, self._route, str(status)), amounts)


def _observe_each(child: Histogram, amounts: list[float]) -> None:
    """`child.observe(amount)` for each amount, as it does them: the sum takes one amount at a
    time, in order (the same float); each bucket its count at once (the same whole number)
    instead of a search through the bounds and a locked add per request."""
    bounds = child._upper_bounds
    counts = [0] * len(bounds)
    add = child._sum.inc
    for amount in amounts:
        add(amount)
        if amount == amount:  # observe puts a NaN in no bucket
            counts[bisect_left(bounds, amount)] += 1
    for bucket, count in zip(child._buckets, counts, strict=True):
        if count:
            bucket.inc(count)
