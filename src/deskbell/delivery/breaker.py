"""Per-channel circuit breaker: after N consecutive transient failures a channel pauses for a
cool-down, then lets one probe through; the probe's result closes or reopens it.

While a channel is open its due deliveries are still claimed, but `admit` says no: the worker
does not send them, the attempt fails fast ("circuit open", transient) and counts under the
delivery's own retry policy, so a delivery goes dead (and to its fallback) on its own schedule
whether or not the breaker is open. Those fail-fast results are not fed back here: only real
sends move the breaker, so they can neither reopen it nor extend its cool-down. Pure: the
caller passes the time in.

State is per worker process. With several workers each learns of an outage on its own,
which costs each at most N failed sends (or its channel's `max_concurrency`, if more were
already under way) before it pauses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class Breaker:
    """One channel's breaker: opens after `failures` consecutive transient failures, for
    `cool_down` seconds (a channel's `breaker:` block, channels/base.py BreakerConfig)."""

    failures: int = 5
    cool_down: float = 30.0
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    open_until: datetime | None = None
    probing: bool = False  # half-open and the one probe is under way

    def allowance(self, now: datetime, limit: int, in_flight: int, queued: int = 0) -> int:
        """How many more deliveries of this channel may be claimed now: its free slots while
        closed or open (an open channel's fail fast, see `admit`), one probe while half-open
        (none while one already waits, `queued`, to be sent)."""
        self._cool(now)
        if self.state is BreakerState.HALF_OPEN:
            return 1 if not self.probing and not queued and in_flight < limit else 0
        return max(0, limit - in_flight)

    def admit(self, now: datetime) -> bool:
        """Whether a claimed delivery is sent (True) or fails fast unsent (False). Half-open,
        the first one admitted is the probe; the rest fail fast until it reports."""
        self._cool(now)
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def probe_abandoned(self) -> None:
        """The probe ended without a result (cancelled): the next claim may probe again."""
        self.probing = False

    def record(self, *, transient_failure: bool, now: datetime) -> BreakerState | None:
        """Feed one real send's result; returns the new state when it changed.

        A failure while already open (a send started before it opened) neither extends the
        cool-down nor changes the state; a success from any send closes it.
        """
        before = self.state
        if not transient_failure:
            self.consecutive_failures = 0
            self.state = BreakerState.CLOSED
            self.open_until = None
        else:
            self.consecutive_failures += 1
            if self.state is BreakerState.HALF_OPEN or (
                self.state is BreakerState.CLOSED and self.consecutive_failures >= self.failures
            ):
                self.state = BreakerState.OPEN
                self.open_until = now + timedelta(seconds=self.cool_down)
        if self.state is not before:
            self.probing = False
            return self.state
        return None

    def _cool(self, now: datetime) -> None:
        if self.state is BreakerState.OPEN and (self.open_until is None or now >= self.open_until):
            self.state = BreakerState.HALF_OPEN
            self.probing = False
