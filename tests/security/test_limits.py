"""The token bucket, on a clock the test moves."""

from __future__ import annotations

import pytest

from deskbell.api.errors import ApiError
from deskbell.api.limits import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_burst_then_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=3, now=clock)
    assert [limiter.take("k") for _ in range(3)] == [None, None, None]
    wait = limiter.take("k")
    assert wait == pytest.approx(0.5)
    assert limiter.take("other") is None  # buckets are per key
    clock.t += 0.5
    assert limiter.take("k") is None
    assert limiter.take("k") is not None
    clock.t += 100
    assert [limiter.take("k") for _ in range(3)] == [None, None, None]  # refills to burst only
    assert limiter.take("k") is not None


def test_refusal_is_429_with_retry_after() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.1, burst=1, now=clock)
    limiter.check("k")
    with pytest.raises(ApiError) as caught:
        limiter.check("k")
    assert caught.value.status == 429
    assert caught.value.headers == {"Retry-After": "10"}


def test_zero_rate_is_off_and_buckets_are_bounded() -> None:
    assert all(RateLimiter(0, 1).take("k") is None for _ in range(100))
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=1, now=clock, max_buckets=2)
    for key in ("a", "b", "c"):
        limiter.take(key)
    assert len(limiter._buckets) == 2
