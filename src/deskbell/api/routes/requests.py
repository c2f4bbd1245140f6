"""Reading requests back: one by id, or a newest-first page with a cursor (SPEC §2)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from deskbell.api.deps import RuntimeDep
from deskbell.api.errors import ApiError
from deskbell.api.schemas import ErrorOut, RequestOut, RequestPage
from deskbell.models import TOPIC_PATTERN, DeliveryStatus

router = APIRouter(tags=["requests"])

Id = Annotated[str, Path(min_length=1, max_length=64)]


@router.get(
    "/v1/assistance-requests/{request_id}",
    response_model=RequestOut,
    responses={404: {"model": ErrorOut}},
)
async def get_request(request_id: Id, runtime: RuntimeDep) -> RequestOut:
    stored = await runtime.store.get_request(request_id)
    if stored is None:
        raise ApiError(404, "not_found", f"no assistance request {request_id}")
    return RequestOut.of(stored)


@router.get("/v1/assistance-requests", response_model=RequestPage)
async def list_requests(
    runtime: RuntimeDep,
    topic: Annotated[str | None, Query(pattern=TOPIC_PATTERN)] = None,
    status: Annotated[
        DeliveryStatus | None, Query(description="requests with a delivery in this status")
    ] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601, with a time zone")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> RequestPage:
    if since is not None and since.tzinfo is None:
        raise ApiError(422, "validation_failed", "since must carry a time zone, e.g. ...Z")
    items, next_cursor = await runtime.store.list_requests(
        topic=topic, status=status, since=since, limit=limit, cursor=cursor
    )
    return RequestPage(items=[RequestOut.of(s) for s in items], next_cursor=next_cursor)
