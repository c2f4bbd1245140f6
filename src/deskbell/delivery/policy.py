"""When to try a failed delivery again, as a pure value object (no I/O, no clock of its own)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field


class RetryConfig(BaseModel):
    """The `retry:` block of a channel; defaults as SPEC §5."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(default=10, ge=1, le=1000)
    max_age: float = Field(default=24 * 3600, gt=0, description="seconds since accept")
    initial: float = Field(default=1.0, gt=0, description="first backoff, seconds")
    max: float = Field(default=300.0, gt=0, description="backoff cap, seconds")
    max_retry_after: float = Field(
        default=3600.0, gt=0, description="cap on a server's Retry-After, seconds"
    )

    def policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            max_age=timedelta(seconds=self.max_age),
            initial=self.initial,
            cap=self.max,
            max_retry_after=self.max_retry_after,
        )


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by age.

    Full jitter (a uniform draw in [0, backoff]) keeps many deliveries that failed together
    from retrying together; a server's Retry-After is a floor, capped so a hostile or buggy
    peer cannot park a delivery for days.
    """

    max_attempts: int = 10
    max_age: timedelta = timedelta(hours=24)
    initial: float = 1.0
    cap: float = 300.0
    max_retry_after: float = 3600.0

    def backoff(self, attempts: int) -> float:
        """Upper bound of the wait after `attempts` failed attempts (1-based)."""
        return float(min(self.cap, self.initial * 2 ** max(0, attempts - 1)))

    def next_attempt_at(
        self,
        *,
        attempts: int,
        accepted_at: datetime,
        now: datetime,
        retry_after: float | None = None,
        rng: random.Random | None = None,
    ) -> datetime | None:
        """When to try again after a transient failure, or None when the delivery is dead."""
        if attempts >= self.max_attempts:
            return None
        draw = (rng or random).uniform(0.5, 1.0)
        delay = self.backoff(attempts) * draw
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_retry_after))
        when = now + timedelta(seconds=delay)
        if when - accepted_at > self.max_age:
            return None
        return when
