"""The values the Store hands out and takes back, and the one row-to-Delivery mapping: plain
data shared by ingest (store.py), the work queue (queue.py), the worker and the API."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import uuid_utils

from deskbell.models import AssistanceRequestIn, Delivery, DeliveryStatus, Outcome


def new_id() -> str:
    """UUIDv7: time-ordered, so inserts append to the index instead of scattering."""
    return str(uuid_utils.uuid7())


class RequestTrace(NamedTuple):
    """Where a request came from, stored with it so its deliveries' log lines and spans, run
    later and maybe elsewhere, join the ingest's: the `X-Request-ID` and the W3C traceparent.
    A NamedTuple, not a frozen dataclass (whose __init__ costs three times as much): built for
    every ingest request, and immutable and hashable, as the default of `Claimed` must be."""

    http_request_id: str | None = None
    traceparent: str | None = None


NO_TRACE = RequestTrace()


@dataclass(frozen=True)
class Claimed:
    """A delivery a worker now holds, with what it needs to send it."""

    delivery: Delivery
    request: AssistanceRequestIn
    accepted_at: datetime
    lease_owner: str
    trace: RequestTrace = NO_TRACE


@dataclass(frozen=True)
class AttemptResult:
    """What the worker decided after one attempt; the Store only records it."""

    outcome: Outcome
    status: DeliveryStatus
    started_at: datetime
    finished_at: datetime
    error: str | None = None
    next_attempt_at: datetime | None = None


def delivery_from_row(row: Any) -> Delivery:
    return Delivery(
        id=row.id,
        request_id=row.request_id,
        channel=row.channel,
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        created_at=row.created_at,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        sent_at=row.sent_at,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        fallback_of=row.fallback_of,
    )
