"""Callback events to the bot (SPEC §9) as deliveries in the same ledger.

An event is a delivery row of kind `event` on the reserved channel `CALLBACK_CHANNEL`, with
its type and data; it is added in the transaction of the change it reports, and only for a
request that has a callback (`requests.callback_url`, fixed at accept time), so the worker
sends it with the same retries and dead-lettering as any delivery (`delivery/callbacks.py`).

Every event's data starts with the request's id, topic and handoff (`state`, `claimed_by`,
`claimed_at`, `via`, `resolved_by`, `resolved_at`), so a bot that missed one event still
sees where the request is; each type adds a few keys of its own. Never a secret, and nothing
of the customer's request beyond its id and topic: the bot sent it, and has it.

`delivery_events` derives the events an attempt batch causes (`request.notified`,
`request.escalated`, `request.failed`) inside that batch's transaction (storage/attempts.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from deskbell.callbacks import CALLBACK_CHANNEL
from deskbell.models import DeliveryStatus
from deskbell.storage.engine import Database, notify_due_in
from deskbell.storage.ids import new_id
from deskbell.storage.tables import deliveries, requests

EVENT_KIND = "event"

ACCEPTED = "request.accepted"
NOTIFIED = "request.notified"
CLAIMED = "request.claimed"
ESCALATED = "request.escalated"
FAILED = "request.failed"
RESOLVED = "request.resolved"
EVENT_TYPES = (ACCEPTED, NOTIFIED, CLAIMED, ESCALATED, FAILED, RESOLVED)
__all__ = ["CALLBACK_CHANNEL", "EVENT_TYPES", "NewEvent", "delivery_events", "insert_events"]

# Deliveries that may still reach a person: while one of a request's is in one of these (or
# sent), the request has not failed.
_ALIVE = frozenset(
    {DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT, DeliveryStatus.RETRYING, DeliveryStatus.SENT}
)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """`type` such as `request.claimed`; `data` the event's JSON data (never a secret)."""

    type: str
    data: dict[str, Any]


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


def handoff_data(
    request_id: str,
    topic: str,
    state: str,
    *,
    claimed_by: str | None = None,
    claimed_at: datetime | None = None,
    via: str | None = None,
    resolved_by: str | None = None,
    resolved_at: datetime | None = None,
) -> dict[str, Any]:
    """What every event's data starts with: the request and where its handoff stands (the
    keys of storage/handoff.py's `event_data` for `request.claimed` / `request.resolved`)."""
    return {
        "request_id": request_id,
        "topic": topic,
        "state": state,
        "claimed_by": claimed_by,
        "claimed_at": _iso(claimed_at),
        "via": via,
        "resolved_by": resolved_by,
        "resolved_at": _iso(resolved_at),
    }


def insert_events(
    conn: sa.Connection, request_id: str, events: Sequence[NewEvent], now: datetime
) -> int:
    """Add `events` for `request_id` inside the caller's transaction, if it has a callback.
    Answers how many rows were added (0 when the request has no callback)."""
    if not events:
        return 0
    has_callback = conn.scalar(
        sa.select(requests.c.callback_url.is_not(None)).where(requests.c.id == request_id)
    )
    if not has_callback:
        return 0
    _insert(conn, [(request_id, event) for event in events], now)
    return len(events)


def _insert(conn: sa.Connection, events: Sequence[tuple[str, NewEvent]], now: datetime) -> None:
    conn.execute(
        deliveries.insert(),
        [
            {
                "id": new_id(),
                "request_id": request_id,
                "channel": CALLBACK_CHANNEL,
                "status": DeliveryStatus.PENDING.value,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "next_attempt_at": now,
                "kind": EVENT_KIND,
                "event_type": event.type,
                "event_body": event.data,
            }
            for request_id, event in events
        ],
    )
    notify_due_in(conn)


@dataclass(frozen=True, slots=True)
class Settled:
    """One attempt result as `delivery_events` needs it: a delivery of a request, its kind
    and step, and the status it was just given."""

    delivery_id: str
    request_id: str
    channel: str
    kind: str | None
    step: int | None
    status: DeliveryStatus
    at: datetime
    has_callback: bool = True  # False: its request has none, so no event can come of it


def delivery_events(conn: sa.Connection, settled: Sequence[Settled]) -> int:
    """Inside an attempt batch's transaction, after its deliveries (and fallbacks) are
    written: the events those results raise, for requests that have a callback.

    - `request.notified`: a notification (kind NULL: a route's delivery or a fallback) was
      sent; once per request, for its first one.
    - `request.escalated`: an escalation step's delivery was sent; once per step.
    - `request.failed`: a notification or escalation went dead and none of the request's
      deliveries to people is sent or still under way (a fallback created in this batch is
      under way): nobody was told and nobody will be. Once per request.

    Costs nothing but the filter for a batch that sent or killed no notification, and one
    indexed read of its requests otherwise; the rest only for requests with a callback."""
    candidates = [
        s
        for s in settled
        if s.has_callback
        and s.kind != EVENT_KIND
        and s.status in (DeliveryStatus.SENT, DeliveryStatus.DEAD)
    ]
    if not candidates:
        return 0
    rows = conn.execute(
        sa.select(
            requests.c.id,
            requests.c.topic,
            requests.c.handoff_state,
            requests.c.claimed_by,
            requests.c.claimed_at,
            requests.c.claimed_via,
            requests.c.resolved_by,
            requests.c.resolved_at,
        ).where(
            requests.c.id.in_({s.request_id for s in candidates}),
            requests.c.callback_url.is_not(None),
        )
    )
    with_callback = {row.id: row for row in rows}
    if not with_callback:
        return 0
    others = conn.execute(
        sa.select(
            deliveries.c.request_id,
            deliveries.c.status,
            deliveries.c.kind,
            deliveries.c.event_type,
            deliveries.c.event_body,
        ).where(deliveries.c.request_id.in_(with_callback))
    )
    raised: dict[str, set[tuple[str, int | None]]] = {rid: set() for rid in with_callback}
    statuses: dict[str, Counter[str]] = {rid: Counter() for rid in with_callback}
    for row in others:
        if row.kind == EVENT_KIND:
            step = (row.event_body or {}).get("step") if row.event_type == ESCALATED else None
            raised[row.request_id].add((row.event_type, step))
        else:
            statuses[row.request_id][row.status] += 1
    new: list[tuple[str, NewEvent]] = []
    for s in candidates:
        request = with_callback.get(s.request_id)
        if request is None:
            continue
        event = _event_for(s, request, statuses[s.request_id], raised[s.request_id])
        if event is not None:
            raised[s.request_id].add(
                (event.type, event.data.get("step") if event.type == ESCALATED else None)
            )
            new.append((s.request_id, event))
    if new:
        _insert(conn, new, max(s.at for s in candidates))
    return len(new)


def _event_for(
    s: Settled, request: Any, statuses: Counter[str], raised: set[tuple[str, int | None]]
) -> NewEvent | None:
    data = handoff_data(
        request.id,
        request.topic,
        request.handoff_state,
        claimed_by=request.claimed_by,
        claimed_at=request.claimed_at,
        via=request.claimed_via,
        resolved_by=request.resolved_by,
        resolved_at=request.resolved_at,
    )
    if s.status is DeliveryStatus.SENT:
        if s.kind is None and (NOTIFIED, None) not in raised:
            data.update({"channel": s.channel, "delivery_id": s.delivery_id, "sent_at": _iso(s.at)})
            return NewEvent(NOTIFIED, data)
        if s.kind == "escalation" and (ESCALATED, s.step) not in raised:
            data.update(
                {
                    "step": s.step,
                    "channel": s.channel,
                    "delivery_id": s.delivery_id,
                    "sent_at": _iso(s.at),
                }
            )
            return NewEvent(ESCALATED, data)
        return None
    if (FAILED, None) in raised or any(statuses[status.value] for status in _ALIVE):
        return None
    data.update(
        {
            "channel": s.channel,
            "delivery_id": s.delivery_id,
            "failed_at": _iso(s.at),
            "deliveries": dict(sorted(statuses.items())),
        }
    )
    return NewEvent(FAILED, data)


@dataclass(frozen=True, slots=True)
class EventToSend:
    """An event delivery with what its sender needs: the request's callback and source."""

    delivery_id: str
    request_id: str
    type: str
    data: dict[str, Any]
    occurred_at: datetime
    callback_url: str | None
    source: str | None


async def event_to_send(db: Database, delivery_id: str) -> EventToSend | None:
    """The event of delivery `delivery_id`, or None when it is not an event delivery."""
    async with db.reader.connect() as conn:
        row = (
            await conn.execute(
                sa.select(
                    deliveries.c.id,
                    deliveries.c.request_id,
                    deliveries.c.kind,
                    deliveries.c.event_type,
                    deliveries.c.event_body,
                    deliveries.c.created_at,
                    requests.c.callback_url,
                    requests.c.source,
                )
                .join(requests, requests.c.id == deliveries.c.request_id)
                .where(deliveries.c.id == delivery_id)
            )
        ).first()
    if row is None or row.kind != EVENT_KIND or row.event_type is None:
        return None
    return EventToSend(
        delivery_id=row.id,
        request_id=row.request_id,
        type=row.event_type,
        data=dict(row.event_body or {}),
        occurred_at=row.created_at,
        callback_url=row.callback_url,
        source=row.source,
    )
