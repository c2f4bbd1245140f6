"""The circuit breaker as a pure state machine, with times passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from deskbell.delivery.breaker import Breaker, BreakerState

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_opens_after_consecutive_failures_then_fails_fast_at_full_room() -> None:
    breaker = Breaker(failures=3, cool_down=10)
    assert breaker.record(transient_failure=True, now=T0) is None
    assert breaker.record(transient_failure=True, now=T0) is None
    assert breaker.record(transient_failure=True, now=T0) is BreakerState.OPEN
    soon = T0 + timedelta(seconds=9)
    # Open: claimed as usual (the concurrency cap still holds), but none is sent.
    assert breaker.allowance(soon, limit=8, in_flight=2) == 6
    assert [breaker.admit(soon) for _ in range(3)] == [False] * 3


def test_success_resets_the_count() -> None:
    breaker = Breaker(failures=2)
    breaker.record(transient_failure=True, now=T0)
    breaker.record(transient_failure=False, now=T0)
    assert breaker.record(transient_failure=True, now=T0) is None
    assert breaker.state is BreakerState.CLOSED
    assert breaker.admit(T0)


def test_half_open_probes_one_then_closes_or_reopens() -> None:
    breaker = Breaker(failures=1, cool_down=10)
    breaker.record(transient_failure=True, now=T0)
    later = T0 + timedelta(seconds=10)
    assert breaker.allowance(later, limit=8, in_flight=0) == 1
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admit(later)  # the probe
    assert not breaker.admit(later)  # the rest fail fast while it runs
    assert breaker.allowance(later, limit=8, in_flight=1) == 0
    assert breaker.record(transient_failure=True, now=later) is BreakerState.OPEN
    assert breaker.open_until == later + timedelta(seconds=10)
    assert not breaker.admit(later + timedelta(seconds=5))
    again = later + timedelta(seconds=10)
    assert breaker.allowance(again, limit=8, in_flight=0) == 1
    assert breaker.admit(again)
    assert breaker.record(transient_failure=False, now=again) is BreakerState.CLOSED
    assert breaker.allowance(again, limit=8, in_flight=3) == 5


def test_late_failures_while_open_do_not_extend_the_cool_down() -> None:
    """Sends started before it opened still report; the cool-down runs from the opening."""
    breaker = Breaker(failures=2, cool_down=10)
    breaker.record(transient_failure=True, now=T0)
    breaker.record(transient_failure=True, now=T0)
    late = T0 + timedelta(seconds=8)
    assert breaker.record(transient_failure=True, now=late) is None
    assert breaker.open_until == T0 + timedelta(seconds=10)
    assert breaker.admit(T0 + timedelta(seconds=10))  # the probe, on time


def test_an_abandoned_probe_lets_the_next_claim_probe() -> None:
    breaker = Breaker(failures=1, cool_down=10)
    breaker.record(transient_failure=True, now=T0)
    later = T0 + timedelta(seconds=10)
    assert breaker.admit(later)
    breaker.probe_abandoned()  # cancelled by a graceful stop, say
    assert breaker.allowance(later, limit=8, in_flight=0) == 1
    assert breaker.admit(later)


def test_half_open_claims_no_second_probe_while_one_waits_in_the_queue() -> None:
    breaker = Breaker(failures=1, cool_down=10)
    breaker.record(transient_failure=True, now=T0)
    later = T0 + timedelta(seconds=10)
    # Claimed but not started yet (the worker's local queue): probing is not set until it is
    # admitted, so the queued one must stop a second claim.
    assert breaker.allowance(later, limit=24, in_flight=1, queued=1) == 0
    assert breaker.allowance(later, limit=24, in_flight=0, queued=0) == 1
