"""Per-request observability, as one pure ASGI middleware around the whole app.

- Request id: `X-Request-ID` if the caller sent a sane one (1..128 of `[A-Za-z0-9._:-]`, so a
  header cannot smuggle text into log lines or grow a column), else a new one. It is returned
  in the answer's `X-Request-ID` and bound (structlog contextvars, key `http_request_id`) into
  every log line written while the request runs. It is not `request_id`: that key already
  names the assistance request in log lines.
- `deskbell_http_request_duration_seconds` by method, route template (not the raw path, which
  carries ids) and status.
- For the ingest route: a tracing span, and `deskbell_requests_total` from what the route
  left in `request.state` (`ingest_topic`, `ingest_outcome`) plus the status code, so every
  early refusal (400, 413, 415, 422) is counted without the route counting each one.

Pure ASGI rather than `BaseHTTPMiddleware`, so the bound contextvars reach the route (same
task) and a streamed body is not buffered.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deskbell.storage.records import RequestTrace
from deskbell.wiring import Runtime

HEADER = "X-Request-ID"
INGEST_PATH = "/v1/assistance-requests"
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_id_from(headers: Headers) -> str:
    given = headers.get(HEADER)
    if given is not None and _SAFE_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def request_trace(request: Request) -> RequestTrace:
    """What the middleware learnt of this request, to store with it."""
    found = getattr(request.state, "trace", None)
    return found if isinstance(found, RequestTrace) else RequestTrace()


def route_template(scope: Scope) -> str:
    found = scope.get("state", {}).get("route")
    if isinstance(found, str):
        return found
    # Ingest is served by `api/fast_ingest.py`, which never reaches FastAPI's routing (so
    # `record_route` does not run); its path has no parameters, so it is its own template.
    return INGEST_PATH if scope["path"] == INGEST_PATH else "unmatched"


async def record_route(request: Request) -> None:
    """An app-wide dependency: FastAPI matches routes in a scope of its own, so the template
    is left in the shared `state` for the middleware (404s and 405s stay "unmatched")."""
    path = getattr(request.scope.get("route"), "path", None)
    if isinstance(path, str):
        request.state.route = path


def ingest_outcome(state: dict[str, Any], status: int) -> str:
    if status >= 500:
        return "failed"
    if status >= 400:
        return "rejected"
    return str(state.get("ingest_outcome", "accepted"))


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        request_id = request_id_from(headers)
        state: dict[str, Any] = scope.setdefault("state", {})
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        is_ingest = scope["method"] == "POST" and scope["path"] == INGEST_PATH
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(http_request_id=request_id):
            try:
                if is_ingest:
                    with self.runtime.tracing.ingest_span(headers, INGEST_PATH) as traceparent:
                        state["trace"] = RequestTrace(request_id, traceparent)
                        await self.app(scope, receive, send_with_id)
                else:
                    await self.app(scope, receive, send_with_id)
            finally:
                metrics = self.runtime.metrics
                method = scope["method"] if scope["method"] in _METHODS else "other"
                metrics.http_seconds.labels(method, route_template(scope), str(status)).observe(
                    time.perf_counter() - started
                )
                if is_ingest:
                    metrics.request(state.get("ingest_topic"), ingest_outcome(state, status))
