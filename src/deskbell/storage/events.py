"""Callback events to the bot (SPEC §9) as deliveries in the same ledger.

An event is a delivery row of kind `event` on the reserved channel `CALLBACK_CHANNEL`, with
its type and data; it is added in the transaction of the change it reports, and only for a
request that has a callback (`requests.callback_url`, fixed at accept time), so the worker
sends it with the same retries and dead-lettering as any delivery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from deskbell.storage.ids import new_id
from deskbell.storage.tables import deliveries, requests

CALLBACK_CHANNEL = "callback"  # reserved: no config channel may take this name


@dataclass(frozen=True, slots=True)
class NewEvent:
    """`type` such as `request.claimed`; `data` the event's JSON data (never a secret)."""

    type: str
    data: dict[str, Any]


async def insert_events(
    conn: AsyncConnection, request_id: str, events: Sequence[NewEvent], now: datetime
) -> int:
    """Add `events` for `request_id` inside the caller's transaction, if it has a callback.
    Answers how many rows were added (0 when the request has no callback)."""
    if not events:
        return 0
    has_callback = await conn.scalar(
        sa.select(requests.c.callback_url.is_not(None)).where(requests.c.id == request_id)
    )
    if not has_callback:
        return 0
    await conn.execute(
        deliveries.insert(),
        [
            {
                "id": new_id(),
                "request_id": request_id,
                "channel": CALLBACK_CHANNEL,
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "next_attempt_at": now,
                "kind": "event",
                "event_type": event.type,
                "event_body": event.data,
            }
            for event in events
        ],
    )
    return len(events)
