"""The handoff's state changes (SPEC §9): claim and resolve, each one transaction.

A claim is one conditional UPDATE (`WHERE id = ? AND handoff_state = 'waiting'`): on
PostgreSQL a concurrent claim waits for the row lock and then re-checks the WHERE against the
winner's committed row, so it changes nothing; on SQLite writers take the database lock in
turn (BEGIN IMMEDIATE). The loser reads, in the same transaction, who won. The winner's
transaction also cancels the request's escalation steps not yet sent (`cancelled`) and adds
the `request.claimed` event for the bot (`storage/events.py`), so a claim is never seen
without them.

Resolve goes from `waiting` or `claimed` (whoever holds it: a colleague or a lead may close a
request for someone away) to `resolved`, which is final.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from deskbell.errors import NotFound
from deskbell.models import DeliveryStatus, Escalation, Handoff, HandoffState
from deskbell.storage.engine import Database
from deskbell.storage.events import NewEvent, insert_events
from deskbell.storage.ids import parse_id
from deskbell.storage.tables import deliveries, requests

ESCALATION = "escalation"  # deliveries.kind of an SLA step
# An escalation step not yet attempted, or failed and waiting to be tried again: a claim
# stops it. One in flight is left to finish (it was due before the claim).
_STOPPABLE = (DeliveryStatus.PENDING.value, DeliveryStatus.RETRYING.value)

_HANDOFF_COLUMNS = (
    requests.c.id,
    requests.c.topic,
    requests.c.created_at,
    requests.c.handoff_state,
    requests.c.claimed_by,
    requests.c.claimed_at,
    requests.c.claimed_via,
    requests.c.resolved_by,
    requests.c.resolved_at,
)


@dataclass(frozen=True, slots=True)
class Transition:
    """What a claim or resolve came to: `changed` when this call made the change, and the
    request's handoff after it (with the topic and accept time, for metrics)."""

    changed: bool
    handoff: Handoff
    topic: str
    accepted_at: datetime


def handoff_of(row: Any, escalations: tuple[Escalation, ...] = ()) -> Handoff:
    """A Handoff from a row holding `_HANDOFF_COLUMNS`."""
    return Handoff(
        state=HandoffState(row.handoff_state),
        claimed_by=row.claimed_by,
        claimed_at=row.claimed_at,
        via=row.claimed_via,
        resolved_by=row.resolved_by,
        resolved_at=row.resolved_at,
        escalations=escalations,
    )


def escalation_of(row: Any) -> Escalation:
    """An Escalation from a deliveries row or a Delivery (id, channel, status, step,
    created_at, sent_at). An escalation's `created_at` is its due time (storage/rows.py)."""
    return Escalation(
        step=row.step or 0,
        channel=row.channel,
        status=DeliveryStatus(row.status),
        due_at=row.created_at,
        sent_at=row.sent_at,
        delivery_id=row.id,
    )


async def escalations_of(conn: AsyncConnection, request_id: str) -> tuple[Escalation, ...]:
    """The request's escalation deliveries, by step then id (through the request_id index)."""
    rows = await conn.execute(
        sa.select(
            deliveries.c.id,
            deliveries.c.channel,
            deliveries.c.status,
            deliveries.c.step,
            deliveries.c.created_at,
            deliveries.c.sent_at,
        )
        .where(deliveries.c.request_id == request_id, deliveries.c.kind == ESCALATION)
        .order_by(deliveries.c.step, deliveries.c.id)
    )
    return tuple(escalation_of(r) for r in rows)


def event_data(request_id: str, topic: str, handoff: Handoff) -> dict[str, Any]:
    """The data of a `request.claimed` / `request.resolved` event: ids, names and times,
    never a secret."""
    return {
        "request_id": request_id,
        "topic": topic,
        "state": handoff.state.value,
        "claimed_by": handoff.claimed_by,
        "claimed_at": _iso(handoff.claimed_at),
        "via": handoff.via,
        "resolved_by": handoff.resolved_by,
        "resolved_at": _iso(handoff.resolved_at),
    }


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat().replace("+00:00", "Z")


class Handoffs:
    """Claim and resolve on the writer engine; the count behind the unclaimed gauge."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, request_id: str, *, by: str, via: str, now: datetime) -> Transition:
        """`waiting` -> `claimed` by `by`; anything else is left as it is and answered
        (changed=False). Raises NotFound for an unknown request."""
        return await self._transition(
            request_id,
            requests.c.handoff_state == HandoffState.WAITING.value,
            {
                "handoff_state": HandoffState.CLAIMED.value,
                "claimed_by": by,
                "claimed_at": now,
                "claimed_via": via,
            },
            "request.claimed",
            now,
        )

    async def resolve(self, request_id: str, *, by: str, via: str, now: datetime) -> Transition:
        """`waiting` or `claimed` -> `resolved` by `by` (a request resolved while waiting keeps
        no claimant, and `via` then records how it was resolved). A resolved request is left
        as it is and answered (changed=False). Raises NotFound for an unknown request."""
        return await self._transition(
            request_id,
            requests.c.handoff_state != HandoffState.RESOLVED.value,
            {
                "handoff_state": HandoffState.RESOLVED.value,
                "resolved_by": by,
                "resolved_at": now,
                "claimed_via": sa.func.coalesce(requests.c.claimed_via, via),
            },
            "request.resolved",
            now,
        )

    async def _transition(
        self,
        request_id: str,
        allowed: sa.ColumnElement[bool],
        values: dict[str, Any],
        event: str,
        now: datetime,
    ) -> Transition:
        key = parse_id(request_id)
        if key is None:
            raise NotFound(f"no assistance request {request_id}")
        async with self.db.writer.begin() as conn:
            changed = (
                await conn.execute(
                    requests.update()
                    .where(requests.c.id == key, allowed)
                    .values(**values)
                    .returning(*_HANDOFF_COLUMNS)
                )
            ).first()
            if changed is None:  # someone else's change came first, or no such request
                row = (
                    await conn.execute(sa.select(*_HANDOFF_COLUMNS).where(requests.c.id == key))
                ).first()
                if row is None:
                    raise NotFound(f"no assistance request {request_id}")
                return Transition(
                    False,
                    handoff_of(row, await escalations_of(conn, key)),
                    row.topic,
                    row.created_at,
                )
            await conn.execute(
                deliveries.update()
                .where(
                    deliveries.c.request_id == key,
                    deliveries.c.kind == ESCALATION,
                    deliveries.c.status.in_(_STOPPABLE),
                )
                .values(status=DeliveryStatus.CANCELLED.value, updated_at=now)
            )
            handoff = handoff_of(changed, await escalations_of(conn, key))
            new = [NewEvent(event, event_data(key, changed.topic, handoff))]
            await conn.run_sync(insert_events, key, new, now)  # notifies workers if it adds
            return Transition(True, handoff, changed.topic, changed.created_at)

    async def unclaimed(self) -> int:
        """How many requests are `waiting` (an index-only count on ix_requests_handoff_state_id)."""
        async with self.db.reader.connect() as conn:
            found = await conn.scalar(
                sa.select(sa.func.count())
                .select_from(requests)
                .where(requests.c.handoff_state == HandoffState.WAITING.value)
            )
        return int(found or 0)
