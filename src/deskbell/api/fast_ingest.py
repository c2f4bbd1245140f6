"""The lean ingest path: `POST /v1/assistance-requests`, served ahead of FastAPI's stack.

Ingest is the hot path. Profiled under load, the framework layers around the route (the
Starlette/FastAPI middleware stack, routing, dependency solving, response classes) took most
of the CPU of an ingest request, several times what validating and storing it cost.
`DeskbellAPI.__call__` (api/app.py) hands this one method and path to `IngestEndpoint`
before any of that runs. It does for ingest what the rest of the app gets from
`ObservabilityMiddleware` and the route's dependencies: a request id in the answer and in log
lines, a tracing span, the HTTP and ingest metrics, authentication with the same
`Authenticator` and the `ingest` scope check. Then it calls the same `accept_request` as the
documented FastAPI route (which stays for OpenAPI and `/docs`) and sends the rendered answer
as two ASGI messages. Its log lines name `http_request_id` themselves: binding it into
structlog's contextvars for each request cost 7% of the ingest CPU. The request it hands on
is its own `IngestRequest` (api/incoming.py says why), not Starlette's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext

import structlog
from starlette.types import Receive, Scope, Send

from deskbell.api.auth import Authenticator, Principal, check_scope
from deskbell.api.errors import ApiError
from deskbell.api.incoming import Incoming
from deskbell.api.middleware import HEADER, request_id_from
from deskbell.api.routes.ingest import Answer, accept_request
from deskbell.models import RequestTrace
from deskbell.storage.keys import Scope as KeyScope
from deskbell.wiring import Runtime

PATH = "/v1/assistance-requests"
MAX_IDEMPOTENCY_KEY = 255
log = structlog.get_logger(__name__)
_REQUEST_ID_HEADER = HEADER.lower().encode()
_JSON = (b"content-type", b"application/json")
_NO_SPAN: AbstractContextManager[None] = nullcontext(None)  # reusable, as nullcontext is


class IngestRequest:
    """The lean path's `Incoming`: the scope, the receive channel and the headers as a dict
    of each lower-case name to its first value, decoded as Starlette decodes them (latin-1).
    Ingest asks for about ten headers per request, most of them absent."""

    __slots__ = ("headers", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.headers = first_values(scope["headers"])


def first_values(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Reversed, so that the first of repeated names is the one the dict keeps."""
    pairs = raw if isinstance(raw, list) else list(raw)
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in reversed(pairs)}


class IngestEndpoint:
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
                answer = await accept_request(
                    request,
                    self.runtime,
                    await self._principal(request),
                    _idempotency_key(request),
                    RequestTrace(request_id, traceparent),
                )
            except ApiError as exc:
                answer = Answer.error(exc)
            except Exception:
                log.exception("ingest_failed", http_request_id=request_id)
                answer = Answer.error(ApiError(500, "internal_error", "internal server error"))
            await _send(send, answer, request_id)
        state = scope.get("state") or {}  # what accept_request left, if it got that far
        status = answer.status
        self._tally.record(
            state.get("ingest_topic"),
            ingest_outcome(state, status),
            status,
            time.perf_counter() - started,
        )

    async def _principal(self, request: Incoming) -> Principal:
        principal = await self.authenticator.authenticate(request)
        return check_scope(principal, KeyScope.INGEST)  # the route's own check, 403 if missing

    def _span(self, request: Incoming) -> AbstractContextManager[str | None]:
        tracing = self.runtime.tracing
        if not tracing.enabled:
            return _NO_SPAN
        return tracing.ingest_span(request.headers, PATH)


def ingest_outcome(state: dict[str, object], status: int) -> str:
    """deskbell_requests_total's outcome: every early refusal (400, 413, 415, 422) counts as
    rejected without the code refusing it counting anything."""
    if status >= 500:
        return "failed"
    if status >= 400:
        return "rejected"
    return str(state.get("ingest_outcome", "accepted"))


def _idempotency_key(request: Incoming) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
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
    return key


async def _send(send: Send, answer: Answer, request_id: str) -> None:
    headers = [
        _JSON,
        (b"content-length", str(len(answer.body)).encode()),
        (_REQUEST_ID_HEADER, request_id.encode()),
    ]
    for name, value in answer.headers:
        headers.append((name.lower().encode(), value.encode()))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
