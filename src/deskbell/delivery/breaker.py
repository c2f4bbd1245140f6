"""Per-channel circuit breaker: after N consecutive transient failures a channel pauses for a
cool-down, then lets one probe through; the probe's result closes or reopens it.

While a channel is open its deliveries are simply not claimed, so no attempt is burned
against a peer known to be down. Pure: the caller passes the time in.

State is per worker process. With several workers each learns of an outage on its own,
which costs each at most N failed attempts before it pauses.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class BreakerConfig(BaseModel):
    """The `breaker:` block of a channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: int = Field(default=5, ge=1, le=1000, description="consecutive transient failures")
    cool_down: float = Field(default=30.0, gt=0, le=86400, description="seconds paused")


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class Breaker:
    config: BreakerConfig
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    open_until: datetime | None = None

    def allowance(self, now: datetime, limit: int, in_flight: int) -> int:
        """How many more deliveries of this channel may be claimed now."""
        if self.state is BreakerState.OPEN:
            if self.open_until is not None and now < self.open_until:
                return 0
            self.state = BreakerState.HALF_OPEN
        if self.state is BreakerState.HALF_OPEN:
            return 1 if in_flight == 0 else 0  # one probe at a time
        return max(0, limit - in_flight)

    def record(self, *, transient_failure: bool, now: datetime) -> BreakerState | None:
        """Feed one attempt's result; returns the new state when it changed."""
        before = self.state
        if not transient_failure:
            self.consecutive_failures = 0
            self.state = BreakerState.CLOSED
            self.open_until = None
        else:
            self.consecutive_failures += 1
            if (
                self.state is BreakerState.HALF_OPEN
                or self.consecutive_failures >= self.config.failures
            ):
                self.state = BreakerState.OPEN
                self.open_until = now + timedelta(seconds=self.config.cool_down)
        return self.state if self.state is not before else None
