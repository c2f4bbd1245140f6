"""The circuit breaker as a pure state machine, with times passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from deskbell.delivery.breaker import Breaker, BreakerConfig, BreakerState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_opens_after_consecutive_failures_and_pauses_claims() -> None:
    breaker = Breaker(BreakerConfig(failures=3, cool_down=10))
    assert breaker.record(transient_failure=True, now=T0) is None
    assert breaker.record(transient_failure=True, now=T0) is None
    assert breaker.record(transient_failure=True, now=T0) is BreakerState.OPEN
    assert breaker.allowance(T0 + timedelta(seconds=9), limit=8, in_flight=0) == 0


def test_success_resets_the_count() -> None:
    breaker = Breaker(BreakerConfig(failures=2))
    breaker.record(transient_failure=True, now=T0)
    breaker.record(transient_failure=False, now=T0)
    assert breaker.record(transient_failure=True, now=T0) is None
    assert breaker.state is BreakerState.CLOSED


def test_half_open_probes_one_then_closes_or_reopens() -> None:
    breaker = Breaker(BreakerConfig(failures=1, cool_down=10))
    breaker.record(transient_failure=True, now=T0)
    later = T0 + timedelta(seconds=10)
    assert breaker.allowance(later, limit=8, in_flight=0) == 1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allowance(later, limit=8, in_flight=1) == 0
    assert breaker.record(transient_failure=True, now=later) is BreakerState.OPEN
    assert breaker.allowance(later + timedelta(seconds=5), limit=8, in_flight=0) == 0
    again = later + timedelta(seconds=10)
    assert breaker.allowance(again, limit=8, in_flight=0) == 1
    assert breaker.record(transient_failure=False, now=again) is BreakerState.CLOSED
    assert breaker.allowance(again, limit=8, in_flight=3) == 5
