"""The values the Store hands out and takes back, and the one row-to-Delivery mapping: plain
data shared by ingest (store.py), the work queue (queue.py), the worker and the API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import uuid_utils

from deskbell.models import AssistanceRequestIn, Delivery, DeliveryStatus, Outcome


def new_id() -> str:
    """UUIDv7: time-ordered, so inserts append to the index instead of scattering."""
    return str(uuid_utils.uuid7())


def parse_id(value: str) -> str | None:
    """An id as stored (lower-case, hyphenated UUID text), or None when `value` is no UUID at
    all: such a value names no record, so it never reaches the database (PostgreSQL refuses
    a NUL byte in text, and a lookup by garbage is wasted work)."""
    if len(value) > 45:  # the longest form uuid.UUID takes: urn:uuid: and 36 characters
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None


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
    """A delivery a worker now holds, with what it needs to send it.

    `replayed_at` and `replay_base` (attempts spent before it) are set once the delivery was
    replayed (`retry_dead`): its retry budget counts from the replay, `budget_attempts` and
    `budget_since`, while `delivery.attempts` keeps counting every attempt (it numbers the
    attempt rows and guards the lease)."""

    delivery: Delivery
    request: AssistanceRequestIn
    accepted_at: datetime
    lease_owner: str
    trace: RequestTrace = NO_TRACE
    replayed_at: datetime | None = None
    replay_base: int = 0

    @property
    def budget_attempts(self) -> int:
        """The attempts the retry policy counts: those since the last replay."""
        return self.delivery.attempts - self.replay_base

    @property
    def budget_since(self) -> datetime:
        """Where the policy's age limit counts from: the last replay, else the accept."""
        return self.replayed_at or self.accepted_at


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
