"""`RouteTally`: one hot route's requests, noted as they end and handed to the Prometheus
instruments in bulk, off the request's path.

A request only appends a tuple. `flush` adds them through the instruments' public API, one
`Counter.inc(n)` per topic and outcome and one `observe` per request on a histogram child
looked up once per status, in arrival order, so the totals are exactly what counting each
request at once would make. It runs when a scrape of this process renders the metrics
(`Metrics.render` flushes first, so a scrape never lags), when the runtime closes, and at
most FLUSH_SECONDS after a request, so that in a multiprocess setup another process's
`/metrics`, which reads this process's files, is at most that far behind.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
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
        counts = Tally((self._topic_label(topic), outcome) for topic, outcome, _, _ in pending)
        for (topic, outcome), count in counts.items():
            self._requests.labels(topic, outcome).inc(count)
        observers: dict[int, Callable[[float], None]] = {}
        for _, _, status, seconds in pending:
            observe = observers.get(status)
            if observe is None:
                child = self._seconds.labels(self._method, self._route, str(status))
                observe = observers[status] = child.observe
            observe(seconds)
