"""Reading requests back: one by id, or a newest-first page with a cursor (SPEC §2).

Both answers are rendered by `schemas.render` from `schemas.request_data` and returned as a
`Response`, which FastAPI sends as it is; `response_model` documents them.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from deskbell.api.deps import IsoTime, RequestId, RuntimeDep
from deskbell.api.errors import ApiError
from deskbell.api.schemas import ErrorOut, RequestOut, RequestPage, render, request_data
from deskbell.models import TOPIC_PATTERN, DeliveryStatus
from deskbell.storage.reads import InvalidCursor

router = APIRouter(tags=["requests"])


def _json(data: Any) -> Response:
    return Response(render(data), media_type="application/json")


@router.get(
    "/v1/assistance-requests/{request_id}",
    response_model=RequestOut,
    responses={404: {"model": ErrorOut}},
)
async def get_request(request_id: RequestId, runtime: RuntimeDep) -> Response:
    stored = await runtime.store.reads.get_request(request_id)
    if stored is None:
        raise ApiError(404, "not_found", f"no assistance request {request_id}")
    return _json(request_data(stored))


@router.get(
    "/v1/assistance-requests",
    response_model=RequestPage,
    responses={422: {"model": ErrorOut, "description": "a bad filter, or `invalid_cursor`"}},
)
async def list_requests(
    runtime: RuntimeDep,
    topic: Annotated[str | None, Query(pattern=TOPIC_PATTERN)] = None,
    status: Annotated[
        DeliveryStatus | None, Query(description="requests with a delivery in this status")
    ] = None,
    since: Annotated[IsoTime | None, Query(description="ISO 8601, with a time zone")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="a page's `next_cursor`")] = None,
) -> Response:
    try:
        items, next_cursor = await runtime.store.reads.list_requests(
            topic=topic, status=status, since=since, limit=limit, cursor=cursor
        )
    except InvalidCursor as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    return _json({"items": [request_data(s) for s in items], "next_cursor": next_cursor})
