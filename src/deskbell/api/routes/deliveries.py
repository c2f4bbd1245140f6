"""Deliveries across requests (SPEC §2): `GET /v1/deliveries` (the dead-letter view with
`status=dead`) and `POST /v1/deliveries/retry`, which replays every dead delivery matching the
same filters and answers how many. One delivery's replay stays `admin.py`'s.

Both read and write through `storage/ledger.py`, as the dashboard does.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query
from fastapi.responses import Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from deskbell.api.deps import IsoTime, RuntimeDep
from deskbell.api.errors import ApiError
from deskbell.api.schemas import DeliveryOut, ErrorOut, delivery_data, render
from deskbell.models import DeliveryStatus
from deskbell.storage.ledger import DeliveryFilter, DeliveryLedger, InvalidDeliveryCursor

router = APIRouter(tags=["deliveries"])

Channel = Annotated[str, Field(min_length=1, max_length=128)]


class DeliveryItemOut(DeliveryOut):
    request_id: str


class DeliveryListOut(BaseModel):
    items: list[DeliveryItemOut]
    next_cursor: str | None


class RetryFilterIn(BaseModel):
    """Which dead deliveries to replay; no field: every dead one."""

    model_config = ConfigDict(extra="forbid")

    channel: Channel | None = None
    since: AwareDatetime | None = Field(default=None, description="created at or after")
    until: AwareDatetime | None = Field(default=None, description="created before")


class RetriedOut(BaseModel):
    retried: int = Field(description="how many dead deliveries went back to pending")


@router.get(
    "/v1/deliveries",
    response_model=DeliveryListOut,
    responses={422: {"model": ErrorOut, "description": "a bad filter, or `invalid_cursor`"}},
)
async def list_deliveries(
    runtime: RuntimeDep,
    status: Annotated[DeliveryStatus | None, Query()] = None,
    channel: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    since: Annotated[IsoTime | None, Query(description="created at or after (ISO 8601)")] = None,
    until: Annotated[IsoTime | None, Query(description="created before (ISO 8601)")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="a page's `next_cursor`")] = None,
) -> Response:
    """Newest first, each with its `request_id`."""
    ledger = DeliveryLedger(runtime.db)
    try:
        items, next_cursor = await ledger.list_deliveries(
            DeliveryFilter(status, channel, since, until), limit=limit, cursor=cursor
        )
    except InvalidDeliveryCursor as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    data = {
        "items": [{**delivery_data(d), "request_id": d.request_id} for d in items],
        "next_cursor": next_cursor,
    }
    return Response(render(data), media_type="application/json")


@router.post("/v1/deliveries/retry", response_model=RetriedOut)
async def retry_deliveries(
    runtime: RuntimeDep, body: Annotated[RetryFilterIn | None, Body()] = None
) -> RetriedOut:
    """Every dead delivery matching the filters back to pending, due now, with a fresh retry
    budget (as `POST /v1/deliveries/{id}/retry` does for one)."""
    body = body or RetryFilterIn()
    where = DeliveryFilter(DeliveryStatus.DEAD, body.channel, body.since, body.until)
    count = await DeliveryLedger(runtime.db).retry_matching(where, runtime.clock.now())
    if count:
        runtime.wake_workers()
    return RetriedOut(retried=count)
