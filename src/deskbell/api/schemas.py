"""Wire models of the answers. Requests in are `models.AssistanceRequestIn`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import to_json

from deskbell.models import Customer, Delivery, DeliveryStatus, StoredRequest


class DeliveryBrief(BaseModel):
    id: str
    channel: str
    status: DeliveryStatus


class Accepted(BaseModel):
    id: str
    topic: str
    status: Literal["accepted"] = "accepted"
    deliveries: list[DeliveryBrief]


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

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls.model_validate(delivery_data(d))


RequestStatus = Literal["pending", "sent", "dead"]
_OPEN = {DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT, DeliveryStatus.RETRYING}


def overall_status(deliveries: list[Delivery]) -> RequestStatus:
    """`pending` while any delivery may still be sent; then `dead` if a dead delivery is not
    covered, else `sent`. A dead delivery is covered when its fallback delivery was sent: the
    request reached a person through the route's fallback, which is what a fallback is for.
    (A fallback delivery has no fallback of its own, and a delivery at most one fallback.)"""
    if any(d.status in _OPEN for d in deliveries):
        return "pending"
    fallback = {d.fallback_of: d.status for d in deliveries if d.fallback_of is not None}
    if any(
        d.status is DeliveryStatus.DEAD and fallback.get(d.id) is not DeliveryStatus.SENT
        for d in deliveries
    ):
        return "dead"
    return "sent"


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

    @classmethod
    def of(cls, stored: StoredRequest) -> RequestOut:
        return cls.model_validate(request_data(stored))


class RequestPage(BaseModel):
    items: list[RequestOut]
    next_cursor: str | None


# ---- the read routes' answers as plain data -----------------------------------------------
#
# Building a page of 50 as models (a RequestOut, DeliveryOut and Customer each, all validated)
# and letting FastAPI check the page again took about twice the CPU of rendering these dicts
# (0.4-0.6 ms a page against 0.3). The read routes render the dicts, with the same serializer:
# each dict holds its model's fields in the model's order, so `render` makes the bytes that
# model's `model_dump_json` makes (tests/api/test_status.py holds the two together; a field
# added to a model must be added here too). The models stay what OpenAPI documents, and `of`
# builds them from these dicts, so the mapping is written once.


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
    }


def render(data: Any) -> bytes:
    """JSON as FastAPI renders a response model: pydantic's serializer, compact, UTF-8,
    datetimes as ISO 8601 with `Z`, and (as the models' default) non-finite floats as null."""
    return to_json(data, inf_nan_mode="null")


class TopicOut(BaseModel):
    topic: str
    channels: list[str]


class TopicsOut(BaseModel):
    topics: list[TopicOut]
    default: Literal["reject"] | list[str]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorOut(BaseModel):
    error: ErrorBody
