"""The answers: their models, which OpenAPI documents, and the one builder of each.

Each answer is rendered once, from plain data (`delivery_data`, `request_data`), by `render`:
a dict holding its model's fields in the model's order makes the bytes the model's
`model_dump_json` makes, without building and validating a model per request, delivery and
customer (tests/api/test_status.py holds each answer to its model's bytes; a field added to a
model is added to its builder). Requests in are `models.AssistanceRequestIn`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json

from deskbell.models import (
    Customer,
    Delivery,
    DeliveryStatus,
    Handoff,
    HandoffState,
    StoredRequest,
)


class DeliveryBrief(BaseModel):
    id: str
    channel: str
    status: DeliveryStatus


class Accepted(BaseModel):
    id: str
    topic: str
    status: Literal["accepted"] = "accepted"
    deliveries: list[DeliveryBrief]


class AttemptOut(BaseModel):
    """One attempt of a delivery (`GET /v1/assistance-requests/{id}` only)."""

    number: int
    started_at: datetime
    duration_ms: float
    outcome: str
    error: str | None


class DeliveryOut(BaseModel):
    id: str
    channel: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None
    sent_at: datetime | None
    created_at: datetime
    fallback_of: str | None
    kind: str | None = None  # null: a route's notification; `escalation`; `event`


RequestStatus = Literal["pending", "sent", "dead"]
_OPEN = {DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT, DeliveryStatus.RETRYING}


def overall_status(deliveries: list[Delivery]) -> RequestStatus:
    """`pending` while any delivery may still be sent; then `dead` if a dead delivery is not
    covered, else `sent`. A dead delivery is covered when its fallback delivery was sent: the
    request reached a person through the route's fallback, which is what a fallback is for.
    (A fallback delivery has no fallback of its own, and a delivery at most one fallback.)
    Escalation steps and events (`kind`) do not count: the handoff shows those."""
    deliveries = [d for d in deliveries if d.kind is None]
    if any(d.status in _OPEN for d in deliveries):
        return "pending"
    fallback = {d.fallback_of: d.status for d in deliveries if d.fallback_of is not None}
    if any(
        d.status is DeliveryStatus.DEAD and fallback.get(d.id) is not DeliveryStatus.SENT
        for d in deliveries
    ):
        return "dead"
    return "sent"


class EscalationOut(BaseModel):
    """One SLA step's delivery to one channel (SPEC §9)."""

    step: int
    channel: str
    status: DeliveryStatus
    due_at: datetime | None
    sent_at: datetime | None
    delivery_id: str


class HandoffOut(BaseModel):
    """Who took the request, when and through what (`slack`, `email`, `api`, `ui`, `cli`)."""

    state: HandoffState
    claimed_by: str | None
    claimed_at: datetime | None
    via: str | None
    resolved_by: str | None
    resolved_at: datetime | None
    escalations: list[EscalationOut]


class RequestOut(BaseModel):
    id: str
    created_at: datetime
    status: RequestStatus
    topic: str
    description: str
    customer: Customer | None
    conversation_url: str | None
    language: str | None
    metadata: dict[str, Any]
    deliveries: list[DeliveryOut]
    handoff: HandoffOut


class DeliveryDetailOut(DeliveryOut):
    attempt_history: list[AttemptOut] = Field(description="every attempt, oldest first")


class RequestDetailOut(RequestOut):
    """One request as `GET /v1/assistance-requests/{id}` answers it: a list item plus every
    delivery's attempts (SPEC §2)."""

    deliveries: list[DeliveryDetailOut]  # type: ignore[assignment]


class RequestPage(BaseModel):
    items: list[RequestOut]
    next_cursor: str | None


def delivery_data(d: Delivery) -> dict[str, Any]:
    """A DeliveryOut's fields. `next_attempt_at` only while retrying: a pending delivery's is
    just when it was accepted."""
    return {
        "id": d.id,
        "channel": d.channel,
        "status": d.status,
        "attempts": d.attempts,
        "last_error": d.last_error,
        "next_attempt_at": d.next_attempt_at if d.status is DeliveryStatus.RETRYING else None,
        "sent_at": d.sent_at,
        "created_at": d.created_at,
        "fallback_of": d.fallback_of,
        "kind": d.kind,
    }


def handoff_data(h: Handoff | None) -> dict[str, Any]:
    """A HandoffOut's fields (a request read without its handoff is `waiting`)."""
    h = h or Handoff()
    return {
        "state": h.state,
        "claimed_by": h.claimed_by,
        "claimed_at": h.claimed_at,
        "via": h.via,
        "resolved_by": h.resolved_by,
        "resolved_at": h.resolved_at,
        "escalations": [
            {
                "step": e.step,
                "channel": e.channel,
                "status": e.status,
                "due_at": e.due_at,
                "sent_at": e.sent_at,
                "delivery_id": e.delivery_id,
            }
            for e in h.escalations
        ],
    }


def request_data(stored: StoredRequest) -> dict[str, Any]:
    """A RequestOut's fields: the request's payload flattened in, its customer with every
    field (null when absent), as `Customer` dumps it."""
    p = stored.payload
    c = p.customer
    return {
        "id": stored.id,
        "created_at": stored.created_at,
        "status": overall_status(stored.deliveries),
        "topic": p.topic,
        "description": p.description,
        "customer": None
        if c is None
        else {"id": c.id, "name": c.name, "email": c.email, "phone": c.phone},
        "conversation_url": p.conversation_url,
        "language": p.language,
        "metadata": p.metadata,
        "deliveries": [delivery_data(d) for d in stored.deliveries],
        "handoff": handoff_data(stored.handoff),
    }


def render(data: Any, *, indent: int | None = None) -> bytes:
    """JSON as a model's `model_dump_json` renders it: pydantic's serializer, UTF-8, datetimes
    as ISO 8601 with `Z`, non-finite floats as null; compact unless `indent`."""
    return to_json(data, indent=indent, inf_nan_mode="null")


class RouteOut(BaseModel):
    """A route as the dry run and `GET /v1/topics` show it (`routing.explain.RouteView.data`):
    its place in the config (`routes[index]`), its canonical `match` and `when`."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    index: int
    match: dict[str, Any]
    when: dict[str, str] | None
    channels: list[str]
    continue_: bool = Field(alias="continue")
    fallback: str | None


class TopicRouteOut(RouteOut):
    condition: str | None = Field(
        description="what a request of the topic must also match (`language=es`, a time "
        "window); null: every request of the topic that gets this far"
    )


class TopicOut(BaseModel):
    topic: str
    channels: list[str] = Field(description="what a request with only this topic gets now")
    routes: list[TopicRouteOut] = Field(
        default_factory=list, description="the routes its requests may take, in order"
    )
    reaches_default: bool = Field(
        default=False, description="some requests of this topic match no route (the default)"
    )


class TopicsOut(BaseModel):
    topics: list[TopicOut]
    default: Literal["reject"] | list[str]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorBody
