"""One attempt of one delivery: send through its channel, decide what the result means, record.

This is the only place a delivery meets a channel and the only place that decides on retries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

import structlog

from deskbell.channels.base import Channel, ChannelSettings, Message, SendResult, send_once
from deskbell.clock import Clock
from deskbell.delivery.policy import RetryPolicy
from deskbell.metrics import Metrics
from deskbell.models import AttemptResult, Claimed, DeliveryStatus, Outcome
from deskbell.observability import HotLine
from deskbell.tracing import Tracing

if TYPE_CHECKING:
    from opentelemetry.trace import Span

_ATTEMPTED = HotLine(__name__)  # the line of every attempt: structlog's, called lean


class ResultSink(Protocol):
    """Where an attempt's result goes: the worker's group commit (`AttemptRecorder`). True if
    recorded, False if the lease was lost."""

    async def record_attempt(self, claimed: Claimed, result: AttemptResult) -> bool: ...


class ClaimLinker(Protocol):
    """Makes a delivery's signed claim link (api/claim_links.py `ClaimLinks`, built by
    wiring.py when DESKBELL_SECRET_KEY is set)."""

    def url(self, request_id: str, delivery_id: str) -> str: ...


def message_for(claimed: Claimed, claim_links: ClaimLinker | None = None) -> Message:
    """The channel's input; with `claim_links`, it carries the delivery's claim link."""
    d = claimed.delivery
    return Message(
        delivery_id=d.id,
        request_id=d.request_id,
        channel=d.channel,
        request=claimed.request,
        accepted_at=claimed.accepted_at,
        attempt=d.attempts,
        claim_url=claim_links.url(d.request_id, d.id) if claim_links is not None else None,
        escalation_step=d.step if d.kind == "escalation" else None,
    )


def next_status(
    claimed: Claimed, result: SendResult, settings: ChannelSettings | None, now: datetime
) -> tuple[DeliveryStatus, datetime | None]:
    """An attempt's outcome -> the delivery's next status and, when retrying, its next time."""
    if result.outcome is Outcome.SENT:
        return DeliveryStatus.SENT, None
    if result.outcome is Outcome.PERMANENT or settings is None:
        return DeliveryStatus.DEAD, None
    next_at = RetryPolicy.of(settings.retry).next_attempt_at(
        attempts=claimed.budget_attempts,  # since the last replay, if any
        accepted_at=claimed.budget_since,
        now=now,
        retry_after=result.retry_after,
    )
    if next_at is None:
        return DeliveryStatus.DEAD, None
    return DeliveryStatus.RETRYING, next_at


async def dispatch(
    claimed: Claimed,
    channels: Mapping[str, tuple[Channel, ChannelSettings]],
    store: ResultSink,
    clock: Clock,
    *,
    metrics: Metrics | None = None,
    tracing: Tracing | None = None,
    on_sent: Callable[[SendResult], None] | None = None,
    claim_links: ClaimLinker | None = None,
) -> AttemptResult | None:
    """Run one attempt and record it. Returns what was recorded, or None if the lease was lost.

    `on_sent` hears the channel's answer as soon as the send is over, before the result is
    committed: the worker frees the channel's slot and feeds its breaker then.

    Every log line of the attempt carries the ingest's `http_request_id`, and its span is a
    child of the ingest's: the request's trace, stored with it, crosses into this worker.
    """
    d = claimed.delivery
    # Set and reset by token: what `bound_contextvars` does, without reading every bound
    # variable first to save and restore them.
    tokens = structlog.contextvars.bind_contextvars(http_request_id=claimed.trace.http_request_id)
    try:
        with _span(tracing, claimed) as span:
            recorded, kept = await _attempt(claimed, channels, store, clock, on_sent, claim_links)
            if span is not None:
                span.set_attribute("deskbell.outcome", recorded.outcome.value)
                span.set_attribute("deskbell.status", recorded.status.value)
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
    if metrics is not None:
        sent = recorded.status is DeliveryStatus.SENT
        metrics.attempt(
            d.channel,
            recorded.status if kept else DeliveryStatus.IN_FLIGHT,  # lost lease: not counted
            (recorded.finished_at - recorded.started_at).total_seconds(),
            (recorded.finished_at - claimed.accepted_at).total_seconds() if sent and kept else None,
        )
    return recorded if kept else None


_NO_SPAN: AbstractContextManager[None] = nullcontext()


def _span(tracing: Tracing | None, claimed: Claimed) -> AbstractContextManager[Span | None]:
    """The attempt's span, a child of the stored ingest span; with tracing off, none (and
    nothing built for it)."""
    if tracing is None or not tracing.enabled:
        return _NO_SPAN
    d = claimed.delivery
    attributes: dict[str, str | int] = {
        "deskbell.channel": d.channel,
        "deskbell.delivery_id": d.id,
        "deskbell.request_id": d.request_id,
        "deskbell.attempt": d.attempts,
    }
    return tracing.attempt_span(claimed.trace.traceparent, attributes)


async def _attempt(
    claimed: Claimed,
    channels: Mapping[str, tuple[Channel, ChannelSettings]],
    store: ResultSink,
    clock: Clock,
    on_sent: Callable[[SendResult], None] | None = None,
    claim_links: ClaimLinker | None = None,
) -> tuple[AttemptResult, bool]:
    started = clock.now()
    entry = channels.get(claimed.delivery.channel)
    if entry is None:
        result = SendResult.permanent(
            f"channel {claimed.delivery.channel!r} is not in the active config"
        )
    else:
        links = claim_links if entry[1].CLAIM_LINKS else None  # email: its recipients claim
        result = await send_once(entry[0], entry[1], message_for(claimed, links))
    finished = clock.now()
    if on_sent is not None:
        on_sent(result)
    status, next_at = next_status(claimed, result, entry[1] if entry else None, finished)
    recorded = AttemptResult(
        outcome=result.outcome,
        status=status,
        started_at=started,
        finished_at=finished,
        error=result.error,
        next_attempt_at=next_at,
    )
    kept = await store.record_attempt(claimed, recorded)
    _ATTEMPTED.info(
        "delivery_attempt",
        delivery_id=claimed.delivery.id,
        request_id=claimed.delivery.request_id,
        channel=claimed.delivery.channel,
        attempt=claimed.delivery.attempts,
        outcome=result.outcome.value,
        status=status.value,
        error=result.error,
        duration_ms=round((finished - started).total_seconds() * 1000, 1),
        lease_lost=not kept,
    )
    return recorded, kept
