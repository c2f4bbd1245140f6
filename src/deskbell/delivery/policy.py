"""When to try a failed delivery again, as a pure value object (no I/O, no clock of its own)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deskbell.channels.base import RetryConfig


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with equal jitter, bounded by attempts and by age.

    Equal jitter (half the backoff fixed, the other half a uniform draw: a wait in
    [backoff/2, backoff]) keeps many deliveries that failed together from retrying together
    while never retrying much sooner than the backoff says; a server's Retry-After is a floor,
    capped so a hostile or buggy peer cannot park a delivery for days.
    """

    max_attempts: int = 10
    max_age: timedelta = timedelta(hours=24)
    initial: float = 1.0
    cap: float = 300.0
    max_retry_after: float = 3600.0

    @classmethod
    def of(cls, config: RetryConfig) -> RetryPolicy:
        """The policy of a channel's `retry:` block."""
        return cls(
            max_attempts=config.max_attempts,
            max_age=timedelta(seconds=config.max_age),
            initial=config.initial,
            cap=config.max,
            max_retry_after=config.max_retry_after,
        )

    def backoff(self, attempts: int) -> float:
        """The backoff after `attempts` failed attempts (1-based): the wait is drawn from its
        upper half."""
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
