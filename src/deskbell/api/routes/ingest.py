"""`POST /v1/assistance-requests`: validate, route, commit, and only then answer 202.

`IngestEndpoint` is the one implementation, a plain ASGI callable: `DeskbellAPI` (api/app.py)
hands it every POST to this path before FastAPI's middleware, routing and dependencies, which
cost more than ingest's own work (docs/performance.md). So it does for itself what other
routes get from `ObservabilityMiddleware` and their dependencies: the request id (in the
answer and in its log lines), a tracing span, the HTTP and ingest metrics, and the caller's
`ingest` scope, checked by the same `Authenticator`. `router` declares the operation for
OpenAPI, `/docs` and 405's `Allow`; its endpoint is never called.

The body is read by hand rather than by a body parameter so that each failure gets its own
status (400 not JSON, 413 too large while still reading, 415 wrong type) and nothing is parsed
before its size is known.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Annotated, Any, cast

import orjson
import structlog
from fastapi import APIRouter, Header
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.types import Receive, Scope, Send

from deskbell.api.auth import Authenticator, Principal, check_scope
from deskbell.api.errors import ApiError, validation_details
from deskbell.api.idempotency import body_digest, scoped_key
from deskbell.api.incoming import IngestRequest
from deskbell.api.limits import read_body
from deskbell.api.middleware import HEADER, request_id_from
from deskbell.api.schemas import Accepted, ErrorOut
from deskbell.callbacks import CallbackRefused, callback_for
from deskbell.errors import IdempotencyConflict
from deskbell.models import AssistanceRequestIn, Receipt, RequestTrace
from deskbell.models import Scope as KeyScope
from deskbell.observability import HotLine
from deskbell.routing.router import Target
from deskbell.storage.deadline import IngestTimeout
from deskbell.wiring import Runtime

PATH = "/v1/assistance-requests"
MAX_IDEMPOTENCY_KEY = 255
router = APIRouter(tags=["ingest"])
log = structlog.get_logger(__name__)
_INFO = logging.getLogger(__name__)
_ACCEPTED = HotLine(__name__)  # the line of every accepted request: structlog's, called lean
_REQUEST_ID_HEADER = HEADER.lower().encode()
_JSON = (b"content-type", b"application/json")
_NO_SPAN: AbstractContextManager[None] = nullcontext(None)  # reusable, as nullcontext is
# The model's own pydantic-core validator, called directly (`model_validate_json` parses its
# keyword arguments on every call).
_VALIDATOR = AssistanceRequestIn.__pydantic_validator__


@dataclass(slots=True)
class Answer:
    """A rendered JSON answer, sent as two ASGI messages. `headers`: those beyond the three
    every answer has, as ASGI sends them (lower-case names, bytes)."""

    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def error(cls, exc: ApiError) -> Answer:
        body = {"error": {"code": exc.code, "message": exc.message, "details": exc.details}}
        headers = tuple(
            (name.lower().encode(), value.encode()) for name, value in (exc.headers or {}).items()
        )
        return cls(exc.status, orjson.dumps(body), headers)

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
        return cls(202, orjson.dumps(body), ((b"location", f"{PATH}/{receipt.id}".encode()),))


class IngestEndpoint:
    """Serves `POST /v1/assistance-requests` for one app (its runtime and authenticator)."""

    def __init__(self, runtime: Runtime, authenticator: Authenticator) -> None:
        self.runtime = runtime
        self.authenticator = authenticator
        self._tally = runtime.metrics.tally("POST", PATH)  # both metrics, counted in bulk

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request = IngestRequest(scope, receive)
        request_id = request_id_from(request.headers)
        with self._span(request) as traceparent:
            try:
                answer = await self.ingest(request, RequestTrace(request_id, traceparent))
            except ApiError as exc:
                answer = Answer.error(exc)
            except Exception:
                log.exception("ingest_failed", http_request_id=request_id)
                answer = Answer.error(ApiError(500, "internal_error", "internal server error"))
            await _send(send, answer, request_id)
        status = answer.status
        outcome = "failed" if status >= 500 else "rejected" if status >= 400 else "accepted"
        if outcome == "accepted" and request.duplicate:
            outcome = "duplicate"
        self._tally.record(request.topic, outcome, status, time.perf_counter() - started)

    async def ingest(self, request: IngestRequest, trace: RequestTrace) -> Answer:
        """Caller, content type, body, payload, route, commit, then 202. Raises ApiError."""
        runtime = self.runtime
        principal = await self.caller(request)
        key = idempotency_key(request, principal)
        check_content_type(request.headers.get("content-type"))
        body = await read_body(request, runtime.settings.max_body_bytes)
        payload = parse(body)
        request.topic = payload.topic
        targets = route(runtime, payload)
        source, callback_url = callback(runtime, principal, payload)
        receipt, created = await store(
            runtime, payload, targets, key, body, trace, source=source, callback_url=callback_url
        )
        if created:
            runtime.wake_workers()
            if _INFO.isEnabledFor(logging.INFO):  # skips structlog's work when dropped
                _ACCEPTED.info(
                    "request_accepted",
                    request_id=receipt.id,
                    topic=receipt.topic,
                    channels=[d.channel for d in receipt.deliveries],
                    http_request_id=trace.http_request_id,
                )
        else:
            request.duplicate = True
        return Answer.accepted(receipt)

    async def caller(self, request: IngestRequest) -> Principal:
        """Who sent it (401, 429, 503), if they may ingest (403)."""
        principal = await self.authenticator.authenticate(request)
        return check_scope(principal, KeyScope.INGEST)

    def _span(self, request: IngestRequest) -> AbstractContextManager[str | None]:
        tracing = self.runtime.tracing
        if not tracing.enabled:
            return _NO_SPAN
        return tracing.ingest_span(request.headers, PATH)


def idempotency_key(request: IngestRequest, principal: Principal) -> str | None:
    """The key to store, scoped to its caller (api/idempotency.py): the Idempotency-Key
    header (422 unless 1..255 characters) or, for a signed webhook without one, its
    `webhook-id`, so that a replayed webhook is answered as a repeat."""
    key = request.headers.get("idempotency-key")
    if key is None:
        if principal.webhook_id is None:
            return None
        key = f"webhook:{principal.name}:{principal.webhook_id}"[:MAX_IDEMPOTENCY_KEY]
    elif not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            422,
            "validation_failed",
            "invalid request",
            [
                {
                    "loc": ["header", "idempotency-key"],
                    "msg": f"must be 1..{MAX_IDEMPOTENCY_KEY} characters",
                    "type": "string_length",
                }
            ],
        )
    return scoped_key(principal, key)


def check_content_type(content_type: str | None) -> None:
    """415 unless `application/json` or `application/*+json`."""
    if content_type == "application/json":  # what nearly every bot sends: no parsing
        return
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")


def parse(body: bytes) -> AssistanceRequestIn:
    """The payload, or 400 (not JSON) or 422 (not an object, or invalid, with details)."""
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


def route(runtime: Runtime, payload: AssistanceRequestIn) -> list[Target]:
    """Where the active config sends it; 422 `unknown_topic` (with the known ones) if nowhere."""
    router_ = runtime.active.router
    targets = router_.targets(payload, runtime.clock.now)  # read only for a windowed route
    if not targets:
        raise ApiError(
            422,
            "unknown_topic",
            f"no route for topic {payload.topic!r}",
            {"known_topics": router_.known_topics()},
        )
    return targets


def callback(
    runtime: Runtime, principal: Principal, payload: AssistanceRequestIn
) -> tuple[str | None, str | None]:
    """(source, callback URL) stored with the request (deskbell/callbacks.py): a signed
    request's source, and where its events go; 403 when this caller may not name a
    `callback_url`, 422 when the guard refuses it."""
    source = principal.name if principal.kind == "webhook" else None
    if source is None and payload.callback_url is None:
        return None, None  # the common case: an API key, no callback
    try:
        return callback_for(runtime.active.config, source, payload.callback_url)
    except CallbackRefused as exc:
        if exc.status == 403:
            raise ApiError(403, exc.code, exc.message) from exc
        raise ApiError(
            422,
            "validation_failed",
            "invalid assistance request",
            [{"loc": ["body", "callback_url"], "msg": exc.message, "type": exc.code}],
        ) from exc


async def store(
    runtime: Runtime,
    payload: AssistanceRequestIn,
    targets: list[Target],
    key: str | None,
    body: bytes,
    trace: RequestTrace,
    *,
    source: str | None = None,
    callback_url: str | None = None,
) -> tuple[Receipt, bool]:
    """Commit it; (receipt, created). With a key, the body is compared by its canonical JSON
    (api/idempotency.py): 409 for a reused key with another body. 503 when the database
    fails or does not confirm the write within `ingest_timeout`."""
    try:
        if key is None:  # the group commit bounds its own waits
            return await runtime.accept(
                payload, targets, trace=trace, source=source, callback_url=callback_url
            )
        return await runtime.ingest.deadline.run(
            runtime.accept(
                payload,
                targets,
                idempotency_key=key,
                body_hash=body_digest(body),
                trace=trace,
                source=source,
                callback_url=callback_url,
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


async def _send(send: Send, answer: Answer, request_id: str) -> None:
    headers = [
        _JSON,
        (b"content-length", b"%d" % len(answer.body)),
        (_REQUEST_ID_HEADER, request_id.encode()),
        *answer.headers,
    ]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": why}
    for status, why in {
        400: "body is not JSON",
        403: "the caller may not ingest, or may not name a `callback_url` (only a signed"
        " source with a `callback_secret` may)",
        409: "Idempotency-Key reused by the same caller with a different body",
        413: "body too large",
        415: "not a JSON content type",
        422: "validation failed, or no route for the topic (details list the known topics)",
        503: "database unavailable (nothing was stored), or no commit within the ingest"
        " timeout (`ingest_timeout`: may be stored; retry with the same Idempotency-Key)",
    }.items()
}


@router.post(
    PATH,
    status_code=202,
    response_model=Accepted,
    responses=_ERRORS,
    summary="Hand a conversation to humans",
    description="Stored with its deliveries (one per channel of its route) before the 202"
    " answers. A repeat with the same `Idempotency-Key` from the same caller (or a signed"
    " webhook's `webhook-id`) is answered with the stored request and creates nothing.",
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
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=MAX_IDEMPOTENCY_KEY)
    ] = None,
) -> Accepted:
    """The operation as OpenAPI shows it. Never called: `DeskbellAPI` gives every POST to
    this path to `IngestEndpoint` before routing."""
    raise NotImplementedError("served by IngestEndpoint")
