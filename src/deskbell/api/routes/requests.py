"""Reading requests back: one by id, or a newest-first page with a cursor (SPEC §2); and
claiming and resolving one (SPEC §9).

The answers are rendered by `schemas.render` from `schemas.request_data` (`handoff_data`)
and returned as a `Response`, which FastAPI sends as it is; `response_model` documents them.

Claim and resolve are on their own router (`handoff_router`), guarded by the `agent` scope
(`admin` implies it): a support person's key may take requests but not change the config.
They go through `deskbell.handoff`, as the Slack button and the email link do.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Query
from fastapi.responses import Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from deskbell import handoff
from deskbell.api.auth import PrincipalDep
from deskbell.api.deps import IsoTime, RequestId, RuntimeDep
from deskbell.api.errors import ApiError
from deskbell.api.schemas import (
    ErrorOut,
    HandoffOut,
    RequestDetailOut,
    RequestPage,
    handoff_data,
    render,
    request_data,
)
from deskbell.errors import NotFound
from deskbell.models import TOPIC_PATTERN, DeliveryStatus, HandoffState
from deskbell.storage.ledger import DeliveryLedger
from deskbell.storage.reads import InvalidCursor

router = APIRouter(tags=["requests"])
handoff_router = APIRouter(tags=["handoff"])

Name = Annotated[
    str,
    Field(description="who: 1..128 characters once trimmed, no control characters"),
    AfterValidator(handoff.clean_name),
]


class ClaimIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Name


class ResolveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Name | None = Field(default=None, description="default: the caller's key or token name")


def _json(data: Any) -> Response:
    return Response(render(data), media_type="application/json")


@router.get(
    "/v1/assistance-requests/{request_id}",
    response_model=RequestDetailOut,
    responses={404: {"model": ErrorOut}},
)
async def get_request(request_id: RequestId, runtime: RuntimeDep) -> Response:
    stored = await runtime.store.reads.get_request(request_id)
    if stored is None:
        raise ApiError(404, "not_found", f"no assistance request {request_id}")
    data = request_data(stored)
    history: dict[str, list[dict[str, Any]]] = {}
    for row in await DeliveryLedger(runtime.db).attempts_of(stored.id):
        history.setdefault(row.delivery_id, []).append(
            {
                "number": row.number,
                "started_at": row.started_at,
                "duration_ms": row.duration_ms,
                "outcome": row.outcome,
                "error": row.error,
            }
        )
    for delivery in data["deliveries"]:
        delivery["attempt_history"] = history.get(delivery["id"], [])
    return _json(data)


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
    handoff: Annotated[
        HandoffState | None, Query(description="requests in this handoff state")
    ] = None,
) -> Response:
    try:
        items, next_cursor = await runtime.store.reads.list_requests(
            topic=topic, status=status, since=since, limit=limit, cursor=cursor, handoff=handoff
        )
    except InvalidCursor as exc:
        raise ApiError(422, "invalid_cursor", str(exc)) from exc
    return _json({"items": [request_data(s) for s in items], "next_cursor": next_cursor})


_HANDOFF_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut},
    409: {"model": ErrorOut, "description": "`already_claimed` or `already_resolved`: by whom"},
}


def _answer(outcome: handoff.HandoffOutcome, action: str) -> Response:
    """200 with the handoff when this caller holds the outcome; else 409 naming who."""
    data = handoff_data(outcome.handoff)
    if outcome.won:
        return _json(data)
    if outcome.state == HandoffState.RESOLVED.value:
        who, code = outcome.resolved_by, "already_resolved"
        message = f"cannot {action}: already resolved by {who}"
    else:
        who, code = outcome.claimed_by, "already_claimed"
        message = f"cannot {action}: already claimed by {who}"
    raise ApiError(409, code, message, orjson.loads(render(data)))  # details as JSON values


@handoff_router.post(
    "/v1/assistance-requests/{request_id}/claim",
    response_model=HandoffOut,
    responses=_HANDOFF_ERRORS,
)
async def claim_request(
    request_id: RequestId, runtime: RuntimeDep, body: Annotated[ClaimIn, Body()]
) -> Response:
    """Take the request: `waiting` -> `claimed`. Claiming one you already hold answers 200
    again; one someone else holds (or resolved) is 409 with who."""
    try:
        outcome = await handoff.claim(runtime, request_id, by=body.by, via="api")
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    return _answer(outcome, "claim")


@handoff_router.post(
    "/v1/assistance-requests/{request_id}/resolve",
    response_model=HandoffOut,
    responses=_HANDOFF_ERRORS,
)
async def resolve_request(
    request_id: RequestId,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    body: Annotated[ResolveIn | None, Body()] = None,
) -> Response:
    """Close the request: `waiting` or `claimed` (by anyone) -> `resolved`, final. `by`
    defaults to the caller's key or token name. Resolved by someone else: 409 with who."""
    by = body.by if body is not None and body.by is not None else principal.name
    try:
        outcome = await handoff.resolve(runtime, request_id, by=by, via="api")
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except ValueError as exc:  # a key or token name that is no valid name
        raise ApiError(422, "validation_failed", f"by: {exc}") from None
    return _answer(outcome, "resolve")
