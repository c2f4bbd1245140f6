"""`POST /v1/assistance-requests`: validate, route, commit, and only then answer 202.

The body is read by hand rather than by FastAPI's body parameter so that each failure gets
its own status (400 not JSON, 413 too large while still reading, 415 wrong type) and nothing
is parsed before its size is known. The OpenAPI schema still documents the body.

Requests are served by `api/fast_ingest.py`, ahead of FastAPI's stack; the route here
documents the endpoint in OpenAPI and answers the same way, through the same `accept_request`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

import orjson
import structlog
from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError

from deskbell.api.auth import Principal, PrincipalDep
from deskbell.api.deps import RuntimeDep
from deskbell.api.errors import ApiError, validation_details
from deskbell.api.idempotency import body_digest, scoped_key
from deskbell.api.incoming import Incoming
from deskbell.api.limits import read_body
from deskbell.api.schemas import Accepted, ErrorOut
from deskbell.errors import IdempotencyConflict
from deskbell.models import NO_TRACE, AssistanceRequestIn, Receipt, RequestTrace
from deskbell.storage.deadline import IngestTimeout
from deskbell.wiring import Runtime

router = APIRouter(tags=["ingest"])
log = structlog.get_logger(__name__)
_INFO = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": why}
    for status, why in {
        400: "body is not JSON",
        409: "Idempotency-Key reused by the same caller with a different body",
        413: "body too large",
        415: "not a JSON content type",
        422: "validation failed, or no route for the topic (details list the known topics)",
        503: "database unavailable (nothing was stored), or no commit within the ingest"
        " timeout (`ingest_timeout`: may be stored; retry with the same Idempotency-Key)",
    }.items()
}


def _is_json(content_type: str | None) -> bool:
    if content_type == "application/json":  # what nearly every bot sends: no parsing
        return True
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


# The model's own pydantic-core validator, called directly: `model_validate_json` passes six
# keyword arguments through pydantic-core's argument parsing on every call, which took as
# long as the validation itself (2 us of an ingest request).
_VALIDATOR = AssistanceRequestIn.__pydantic_validator__


def parse(body: bytes) -> AssistanceRequestIn:
    try:
        return cast("AssistanceRequestIn", _VALIDATOR.validate_json(body))
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
) -> Response:
    """Documents the endpoint; requests are served by `api/fast_ingest.py`, which calls
    `accept_request` directly (see docs/architecture.md, "The ingest path")."""
    trace = RequestTrace(request.scope.get("state", {}).get("http_request_id"))
    answer = await accept_request(request, runtime, principal, idempotency_key, trace)
    return Response(answer.body, answer.status, dict(answer.headers), "application/json")


@dataclass(slots=True)
class Answer:
    """A rendered JSON answer: the lean path sends it as two ASGI messages, no Response.
    Not frozen, as the other records built for every ingest request (`DeliveryReceipt`)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def error(cls, exc: ApiError) -> Answer:
        body = {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}
        return cls(exc.status, orjson.dumps(body), tuple((exc.headers or {}).items()))

    @classmethod
    def accepted(cls, receipt: Receipt) -> Answer:
        """The `Accepted` schema, rendered straight from the receipt."""
        body = {
            "id": receipt.id,
            "topic": receipt.topic,
            "status": "accepted",
            "deliveries": [
                {"id": d.id, "channel": d.channel, "status": d.status} for d in receipt.deliveries
            ],
        }
        location = f"/v1/assistance-requests/{receipt.id}"
        return cls(202, orjson.dumps(body), (("location", location),))


async def accept_request(
    request: Incoming,
    runtime: Runtime,
    principal: Principal,
    idempotency_key: str | None,
    trace: RequestTrace = NO_TRACE,
) -> Answer:
    """The whole ingest: type, size, parse, route, commit, then 202. Raises ApiError.

    Leaves `ingest_topic` and `ingest_outcome` in `request.state` for deskbell_requests_total
    (written to the scope's dict that `request.state` wraps: the wrapper and its attribute
    hooks cost 2% of an ingest).
    """
    state = request.scope.setdefault("state", {})
    if not _is_json(request.headers.get("content-type")):
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
    body = await read_body(request, runtime.settings.max_body_bytes)
    payload = parse(body)
    state["ingest_topic"] = payload.topic
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
    body_hash = None
    if idempotency_key is not None:  # per caller, and the same JSON is the same body
        idempotency_key = scoped_key(principal, idempotency_key)
        body_hash = body_digest(body)
    try:
        if idempotency_key is None:  # the group commit bounds its own waits
            receipt, created = await runtime.accept(payload, targets, trace=trace)
        else:
            receipt, created = await runtime.ingest.deadline.run(
                runtime.accept(
                    payload,
                    targets,
                    idempotency_key=idempotency_key,
                    body_hash=body_hash,
                    trace=trace,
                )
            )
    except IngestTimeout as exc:
        log.error("ingest_timeout", seconds=exc.seconds, http_request_id=trace.http_request_id)
        raise ApiError(
            503,
            "ingest_timeout",
            "the database did not confirm the write in time; the request may still be stored:"
            " retry with the same Idempotency-Key",
            {"timeout_seconds": exc.seconds},
            headers={"Retry-After": str(exc.retry_after)},
        ) from exc
    except IdempotencyConflict as exc:
        raise ApiError(
            409, "idempotency_conflict", "Idempotency-Key was used with a different body"
        ) from exc
    except (OperationalError, DBAPIError, OSError) as exc:
        log.error("ingest_store_failed", error=str(exc), http_request_id=trace.http_request_id)
        raise ApiError(
            503, "database_unavailable", "database unavailable; nothing was stored"
        ) from exc
    state["ingest_outcome"] = "accepted" if created else "duplicate"
    if created:
        runtime.wake_workers()
        if _INFO.isEnabledFor(logging.INFO):  # skips structlog's work when the line is dropped
            log.info(
                "request_accepted",
                request_id=receipt.id,
                topic=receipt.topic,
                channels=[d.channel for d in receipt.deliveries],
                http_request_id=trace.http_request_id,
            )
    return Answer.accepted(receipt)
