"""Per-request observability, as one pure ASGI middleware around the whole app.

- Request id: `X-Request-ID` if the caller sent a sane one (1..128 of `[A-Za-z0-9._:-]`, so a
  header cannot smuggle text into log lines or grow a column), else a new one. It is returned
  in the answer's `X-Request-ID` and bound (structlog contextvars, key `http_request_id`) into
  every log line written while the request runs. It is not `request_id`: that key already
  names the assistance request in log lines.
- `deskbell_http_request_duration_seconds` by method, route template (not the raw path, which
  carries ids) and status.

Ingest is served ahead of this middleware by `IngestEndpoint` (api/routes/ingest.py), which does the
same for it (plus its tracing span and `deskbell_requests_total`) with less machinery.

Pure ASGI rather than `BaseHTTPMiddleware`, so the bound contextvars reach the route (same
task) and a streamed body is not buffered.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

import structlog
import uuid_utils
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deskbell.wiring import Runtime

HEADER = "X-Request-ID"
_HEADER_KEY = HEADER.lower()  # as `Incoming` headers are asked for
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_id_from(headers: Mapping[str, str]) -> str:
    given = headers.get(_HEADER_KEY)
    if given is not None and _SAFE_ID.fullmatch(given):
        return given
    return uuid_utils.uuid4().hex  # the C uuid4, much cheaper than the stdlib's


def route_template(scope: Scope) -> str:
    found = scope.get("state", {}).get("route")
    return found if isinstance(found, str) else "unmatched"


async def record_route(request: Request) -> None:
    """An app-wide dependency: FastAPI matches routes in a scope of its own, so the template
    is left in the shared `state` for the middleware (404s and 405s stay "unmatched")."""
    path = getattr(request.scope.get("route"), "path", None)
    if isinstance(path, str):
        request.state.route = path


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
        # Shared with the route's scope (see `record_route`); the id is stored with a request.
        scope.setdefault("state", {})["http_request_id"] = request_id
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message)[HEADER] = request_id
            await send(message)

        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(http_request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                method = scope["method"] if scope["method"] in _METHODS else "other"
                self.runtime.metrics.http_seconds.labels(
                    method, route_template(scope), str(status)
                ).observe(time.perf_counter() - started)
