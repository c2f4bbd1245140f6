"""`POST /v1/assistance-requests`: validate, route, commit, and only then answer 202.

The body is read by hand rather than by FastAPI's body parameter so that each failure gets
its own status (400 not JSON, 413 too large while still reading, 415 wrong type) and nothing
is parsed before its size is known. The OpenAPI schema still documents the body.
"""

from __future__ import annotations

import hashlib
from typing import Any

import structlog
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError

from deskbell.api.auth import Principal, PrincipalDep
from deskbell.api.deps import RuntimeDep
from deskbell.api.errors import ApiError, validation_details
from deskbell.api.limits import read_body
from deskbell.api.middleware import request_trace
from deskbell.api.schemas import Accepted, ErrorOut
from deskbell.errors import IdempotencyConflict
from deskbell.models import AssistanceRequestIn
from deskbell.wiring import Runtime

router = APIRouter(tags=["ingest"])
log = structlog.get_logger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": why}
    for status, why in {
        400: "body is not JSON",
        409: "Idempotency-Key reused with a different body",
        413: "body too large",
        415: "not a JSON content type",
        422: "validation failed, or no route for the topic (details list the known topics)",
        503: "database unavailable; nothing was stored",
    }.items()
}


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def parse(body: bytes) -> AssistanceRequestIn:
    try:
        return AssistanceRequestIn.model_validate_json(body)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise ApiError(400, "invalid_json", "body is not valid JSON") from exc
        if any(e["type"] == "model_type" and not e["loc"] for e in exc.errors()):
            raise ApiError(422, "validation_failed", "body must be a JSON object") from exc
        raise ApiError(
            422, "validation_failed", "invalid assistance request", validation_details(exc)
        ) from exc


@router.post(
    "/v1/assistance-requests",
    status_code=202,
    response_model=Accepted,
    responses=_ERRORS,
    summary="Hand a conversation to humans",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/AssistanceRequestIn"}}
            },
        }
    },
)
async def ingest(
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    idempotency_key: str | None = Header(default=None, min_length=1, max_length=255),
) -> JSONResponse:
    """Documents the endpoint; requests are served by `api/fast_ingest.py`, which calls
    `accept_request` directly (see docs/architecture.md, "The ingest path")."""
    return await accept_request(request, runtime, principal, idempotency_key)


async def accept_request(
    request: Request, runtime: Runtime, principal: Principal, idempotency_key: str | None
) -> JSONResponse:
    """The whole ingest: type, size, parse, route, commit, then 202. Raises ApiError."""
    if not _is_json(request.headers.get("content-type")):
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
    body = await read_body(request, runtime.settings.max_body_bytes)
    payload = parse(body)
    request.state.ingest_topic = payload.topic  # for deskbell_requests_total (api/middleware.py)
    router_ = runtime.active.router
    targets = router_.targets(payload)
    if not targets:
        raise ApiError(
            422,
            "unknown_topic",
            f"no route for topic {payload.topic!r}",
            {"known_topics": router_.known_topics()},
        )
    if idempotency_key is None and principal.webhook_id is not None:
        # A replayed signed webhook (same webhook-id) is answered like an idempotent repeat.
        idempotency_key = f"webhook:{principal.name}:{principal.webhook_id}"[:255]
    body_hash = hashlib.sha256(body).hexdigest() if idempotency_key else None
    try:
        stored, created = await runtime.accept(
            payload,
            targets,
            idempotency_key=idempotency_key,
            body_hash=body_hash,
            trace=request_trace(request),
        )
    except IdempotencyConflict as exc:
        raise ApiError(
            409, "idempotency_conflict", "Idempotency-Key was used with a different body"
        ) from exc
    except (OperationalError, DBAPIError, OSError) as exc:
        log.error("ingest_store_failed", error=str(exc))
        raise ApiError(
            503, "database_unavailable", "database unavailable; nothing was stored"
        ) from exc
    request.state.ingest_outcome = "accepted" if created else "duplicate"
    if created:
        runtime.wake_workers()
        log.info(
            "request_accepted",
            request_id=stored.id,
            topic=payload.topic,
            channels=[d.channel for d in stored.deliveries],
        )
    return JSONResponse(
        Accepted.of(stored).model_dump(mode="json"),
        status_code=202,
        headers={"Location": f"/v1/assistance-requests/{stored.id}"},
    )
