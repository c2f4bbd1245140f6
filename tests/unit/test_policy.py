"""RetryPolicy and the attempt -> status decision, with plain values and a fixed RNG."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from deskbell.channels.base import (
    ChannelSettings,
    RetryConfig,
    SendResult,
    classify_http,
    parse_retry_after,
)
from deskbell.delivery.dispatch import next_status
from deskbell.delivery.policy import RetryPolicy
from deskbell.models import AssistanceRequestIn, Claimed, Delivery, DeliveryStatus, Outcome

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_backoff_doubles_from_initial_to_cap() -> None:
    policy = RetryPolicy(initial=1, cap=300)
    assert [policy.backoff(n) for n in range(1, 11)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]


def test_jitter_stays_within_half_to_full_backoff() -> None:
    policy = RetryPolicy(initial=10, cap=1000)
    rng = random.Random(7)
    for attempts in range(1, 6):
        when = policy.next_attempt_at(attempts=attempts, accepted_at=T0, now=T0, rng=rng)
        assert when is not None
        delay = (when - T0).total_seconds()
        assert policy.backoff(attempts) * 0.5 <= delay <= policy.backoff(attempts)


def test_gives_up_after_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.next_attempt_at(attempts=2, accepted_at=T0, now=T0) is not None
    assert policy.next_attempt_at(attempts=3, accepted_at=T0, now=T0) is None


def test_gives_up_past_max_age() -> None:
    policy = RetryPolicy(max_age=timedelta(minutes=10), initial=60, cap=60)
    late = T0 + timedelta(minutes=9, seconds=30)
    assert policy.next_attempt_at(attempts=1, accepted_at=T0, now=late) is None


def test_retry_after_is_a_floor_and_capped() -> None:
    policy = RetryPolicy(initial=1, max_retry_after=120)
    when = policy.next_attempt_at(attempts=1, accepted_at=T0, now=T0, retry_after=30)
    assert when is not None
    assert (when - T0).total_seconds() == 30
    capped = policy.next_attempt_at(attempts=1, accepted_at=T0, now=T0, retry_after=99999)
    assert capped is not None
    assert (capped - T0).total_seconds() == 120


def test_retry_config_defaults_match_the_spec() -> None:
    policy = RetryPolicy.of(RetryConfig())
    assert (policy.max_attempts, policy.max_age, policy.initial, policy.cap) == (
        10,
        timedelta(hours=24),
        1.0,
        300.0,
    )


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SENT),
        (204, Outcome.SENT),
        (400, Outcome.PERMANENT),
        (403, Outcome.PERMANENT),
        (404, Outcome.PERMANENT),
        (408, Outcome.TRANSIENT),
        (429, Outcome.TRANSIENT),
        (500, Outcome.TRANSIENT),
        (503, Outcome.TRANSIENT),
    ],
)
def test_http_classifier(status: int, outcome: Outcome) -> None:
    assert classify_http(status, {}).outcome is outcome


def test_retry_after_header_forms() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", T0) == 30.0
    assert parse_retry_after("soon") is None
    assert classify_http(429, {"retry-after": "3"}).retry_after == 3.0


def _claimed(attempts: int) -> Claimed:
    delivery = Delivery(
        id="d",
        request_id="r",
        channel="c",
        status=DeliveryStatus.IN_FLIGHT,
        attempts=attempts,
        created_at=T0,
        next_attempt_at=T0,
        last_error=None,
        sent_at=None,
    )
    request = AssistanceRequestIn(topic="t", description="x")
    return Claimed(delivery=delivery, request=request, accepted_at=T0, lease_owner="w")


SETTINGS = ChannelSettings(type="console", retry=RetryConfig(max_attempts=3))


@pytest.mark.parametrize(
    ("result", "attempts", "expected"),
    [
        (SendResult.sent(), 1, DeliveryStatus.SENT),
        (SendResult.permanent("no"), 1, DeliveryStatus.DEAD),
        (SendResult.transient("later"), 1, DeliveryStatus.RETRYING),
        (SendResult.transient("later"), 3, DeliveryStatus.DEAD),
    ],
)
def test_next_status(result: SendResult, attempts: int, expected: DeliveryStatus) -> None:
    status, when = next_status(_claimed(attempts), result, SETTINGS, T0)
    assert status is expected
    assert (when is not None) == (expected is DeliveryStatus.RETRYING)


def test_missing_channel_is_dead() -> None:
    status, _ = next_status(_claimed(1), SendResult.transient("x"), None, T0)
    assert status is DeliveryStatus.DEAD
