"""Wire models of the answers. Requests in are `models.AssistanceRequestIn`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

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
        return cls(
            id=d.id,
            channel=d.channel,
            status=d.status,
            attempts=d.attempts,
            last_error=d.last_error,
            next_attempt_at=d.next_attempt_at if d.status is DeliveryStatus.RETRYING else None,
            sent_at=d.sent_at,
            created_at=d.created_at,
            fallback_of=d.fallback_of,
        )


RequestStatus = Literal["pending", "sent", "dead"]
_OPEN = {DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT, DeliveryStatus.RETRYING}


def overall_status(deliveries: list[Delivery]) -> RequestStatus:
    """`pending` while any delivery may still be sent, then `sent` or `dead`."""
    if any(d.status in _OPEN for d in deliveries):
        return "pending"
    if any(d.status is DeliveryStatus.DEAD for d in deliveries):
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
        p = stored.payload
        return cls(
            id=stored.id,
            created_at=stored.created_at,
            status=overall_status(stored.deliveries),
            topic=p.topic,
            description=p.description,
            customer=p.customer,
            conversation_url=p.conversation_url,
            language=p.language,
            metadata=dict(p.metadata),
            deliveries=[DeliveryOut.of(d) for d in stored.deliveries],
        )


class RequestPage(BaseModel):
    items: list[RequestOut]
    next_cursor: str | None


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
