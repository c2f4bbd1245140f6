"""The worker's circuit breakers, one per channel: claim room, send or fail fast, and the
breaker's log lines and metrics.

A delivery claimed while its channel's breaker is open is not sent: `CircuitOpen` stands in
for the channel and answers at once with a transient "circuit open" failure, which the
delivery's retry policy treats like any other (normal backoff, no Retry-After) and which is
not fed back to the breaker. So time to `dead` follows the retry policy, not the breaker.

A change of state is logged once (`breaker_opened`, `breaker_closed`; a failed probe only at
debug, and counted) and always outside the attempt whose result caused it: the attempt runs
with its request's `http_request_id` bound, and the breaker's line is not that request's.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from datetime import datetime

import structlog

from deskbell.channels.base import Channel, ChannelSettings, Message, SendResult
from deskbell.delivery.breaker import Breaker, BreakerState
from deskbell.metrics import Metrics
from deskbell.models import Outcome

log = structlog.get_logger(__name__)


class CircuitOpen:
    """Stands in for a channel whose breaker is open: sends nothing, fails fast."""

    def __init__(self, name: str, error: str) -> None:
        self.name = name
        self.error = error

    async def send(self, message: Message) -> SendResult:
        return SendResult.transient(self.error)


class Circuits:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self._breakers: dict[str, Breaker] = {}
        # The channel object each breaker was made for: a config change that replaces a
        # channel's object (its settings changed, live.py) gives it a new breaker; an
        # unchanged channel keeps its object, so its breaker goes on.
        self._made_for: dict[str, Channel] = {}

    def get(self, channel: str) -> Breaker | None:
        return self._breakers.get(channel)

    def room(
        self,
        channels: Mapping[str, tuple[Channel, ChannelSettings]],
        running: Mapping[str, int],
        now: datetime,
        *,
        queued_per_send: int = 0,
        queued: Mapping[str, int] | None = None,
    ) -> dict[str, int]:
        """Per channel, how many of its deliveries a claim may take now, `running` being
        what the worker holds of it (queued or sending, `queued` of it waiting to be sent): its
        `max_concurrency`, and `queued_per_send` times that again to queue (one probe while
        half-open)."""
        waiting = queued or {}
        room = {}
        for name, (channel, settings) in channels.items():
            breaker = self._breakers.get(name)
            if breaker is None or self._made_for.get(name) is not channel:
                limits = settings.breaker
                breaker = Breaker(failures=limits.failures, cool_down=limits.cool_down)
                self._breakers[name] = breaker
                self._made_for[name] = channel
                if self.metrics is not None:
                    self.metrics.breaker(name, False)  # the series exists from the start
            limit = (1 + queued_per_send) * settings.max_concurrency
            room[name] = breaker.allowance(now, limit, running.get(name, 0), waiting.get(name, 0))
        return room

    def reopens_at(self) -> list[datetime]:
        """When open breakers let a probe through: the worker wakes then."""
        return [
            b.open_until
            for b in self._breakers.values()
            if b.state is BreakerState.OPEN and b.open_until is not None
        ]

    def stand_in(self, channel: str, now: datetime) -> CircuitOpen | None:
        """None if a delivery of `channel` is to be sent now (closed, or the half-open
        probe); else the stand-in that fails it fast."""
        breaker = self._breakers.get(channel)
        if breaker is None or breaker.admit(now):
            return None
        if breaker.state is BreakerState.HALF_OPEN:
            return CircuitOpen(channel, "circuit half-open, a probe is under way (not sent)")
        until = f" until {breaker.open_until.isoformat()}" if breaker.open_until else ""
        return CircuitOpen(channel, f"circuit open{until} (not sent)")

    def is_probe(self, channel: str) -> bool:
        breaker = self._breakers.get(channel)
        return breaker is not None and breaker.state is BreakerState.HALF_OPEN and breaker.probing

    def abandoned(self, channel: str) -> None:
        breaker = self._breakers.get(channel)
        if breaker is not None and breaker.state is BreakerState.HALF_OPEN:
            breaker.probe_abandoned()

    def feed(self, channel: str, result: SendResult, now: datetime) -> None:
        """A real send's result (never a fail-fast one)."""
        breaker = self._breakers.get(channel)
        if breaker is None:
            return
        before = breaker.state
        changed = breaker.record(transient_failure=result.outcome is Outcome.TRANSIENT, now=now)
        if changed is not None:
            # A fresh context: this runs inside the attempt's, whose request id is not ours.
            contextvars.Context().run(self._changed, channel, breaker, before, result)

    def _changed(
        self, channel: str, breaker: Breaker, before: BreakerState, result: SendResult
    ) -> None:
        state = breaker.state
        if self.metrics is not None:
            # Open until a probe closes it: half-open counts as open.
            self.metrics.breaker(channel, state is not BreakerState.CLOSED)
        until = breaker.open_until.isoformat() if breaker.open_until else None
        if state is BreakerState.CLOSED:
            self._count(channel, "closed")
            log.info("breaker_closed", channel=channel, was=before.value)
        elif before is BreakerState.HALF_OPEN:
            self._count(channel, "reopened")
            log.debug("breaker_probe_failed", channel=channel, open_until=until, error=result.error)
        else:
            self._count(channel, "opened")
            log.warning(
                "breaker_opened",
                channel=channel,
                failures=breaker.consecutive_failures,
                open_until=until,
                error=result.error,
            )

    def _count(self, channel: str, change: str) -> None:
        if self.metrics is not None:
            self.metrics.breaker_changed(channel, change)
