"""`create_app(runtime)`: the FastAPI app around an already-built runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from starlette.types import Message, Receive, Scope, Send

from deskbell import __version__
from deskbell.api.auth import Authenticator, read_or_admin, require_scope
from deskbell.api.docs import install_docs
from deskbell.api.errors import install_error_handlers
from deskbell.api.middleware import ObservabilityMiddleware, record_route
from deskbell.api.routes import (
    admin,
    channels,
    claim_page,
    config,
    config_edits,
    deliveries,
    ingest,
    metrics,
    ops,
    requests,
    slack,
)
from deskbell.api.routes import keys as api_keys
from deskbell.api.routes import routing as routing_routes
from deskbell.api.routes.ingest import PATH as INGEST_PATH
from deskbell.api.routes.ingest import IngestEndpoint
from deskbell.api.schemas import ErrorOut
from deskbell.models import AssistanceRequestIn
from deskbell.observability import batched_lines
from deskbell.ui.app import install_ui
from deskbell.wiring import Runtime


class DeskbellAPI(FastAPI):
    """FastAPI, except that every `POST /v1/assistance-requests` goes straight to `ingest`
    (api/routes/ingest.py) before the middleware stack, and HEAD is answered wherever GET is
    (`_head_as_get`); everything else, lifespan included, is FastAPI's."""

    def __init__(self, ingest: IngestEndpoint, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ingest = ingest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
        elif scope["method"] == "POST" and _is_ingest(scope["path"], scope):
            await self.ingest(scope, receive, send)
        elif scope["method"] == "HEAD":
            get_scope, headers_only = _head_as_get(scope, send)
            await super().__call__(get_scope, receive, headers_only)
        else:
            await super().__call__(scope, receive, send)


def _is_ingest(path: str, scope: Scope) -> bool:
    """The ingest path, behind the server's `root_path` if it has one (uvicorn's
    `--root-path` puts it in front of `path`, and routing takes it off)."""
    return path == INGEST_PATH or path == scope.get("root_path", "") + INGEST_PATH


def _head_as_get(scope: Scope, send: Send) -> tuple[Scope, Send]:
    """HEAD as the GET of the same URL, with the body left out (RFC 9110 9.3.2).

    FastAPI routes answer only the methods they name, so HEAD /healthz was a 405. The GET
    answers it, auth and all, and its headers (Content-Length included) go out; its body does
    not. The server keeps its own scope, which still says HEAD."""

    async def headers_only(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return {**scope, "method": "GET"}, headers_only


def create_app(
    runtime: Runtime, *, start_workers: bool = True, batch_log_lines: bool = False
) -> DeskbellAPI:
    """`batch_log_lines`: while the app runs, the log lines of its event loop are written once
    per turn of the loop (observability.py `batched_lines`); `deskbell serve` asks for it."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batched = batched_lines(asyncio.get_running_loop()) if batch_log_lines else nullcontext()
        with batched:
            await runtime.live.start()  # adopt the start-up file, then follow the active one
            if start_workers:
                runtime.start_workers()
            try:
                yield
            finally:
                await runtime.aclose()

    authenticator = Authenticator(runtime)
    app = DeskbellAPI(
        IngestEndpoint(runtime, authenticator),
        title="deskbell",
        version=__version__,
        summary="Durable hand-off of chatbot assistance requests to Slack, email and more.",
        lifespan=lifespan,
        dependencies=[Depends(record_route)],
        # FastAPI's built-in telemetry looks up the global OpenTelemetry providers on every
        # request; deskbell's own spans cover ingest and delivery instead (deskbell[otel],
        # docs/operations.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,  # FastAPI's pages load from a CDN; api/docs.py serves them locally
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.authenticator = authenticator
    install_error_handlers(app)
    app.add_middleware(ObservabilityMiddleware, runtime=runtime)  # request id, HTTP metrics
    app.include_router(ops.router, responses=_ERROR_RESPONSES)  # /healthz, /readyz: open
    # Slack's signature, not a bearer credential, authenticates its clicks (routes/slack.py).
    app.include_router(slack.router, responses=_ERROR_RESPONSES)
    # An email's signed claim link is the credential of its page (routes/claim_page.py).
    app.include_router(claim_page.router)
    if runtime.settings.metrics_open:
        app.include_router(metrics.router, responses=_ERROR_RESPONSES)
    else:
        _protected(app, metrics.router, require_scope("read"))
    # Every other router is included through `_protected`, so auth covers it from the start:
    # GET needs `read`, anything else `admin`, unless a guard says otherwise.
    _protected(app, ingest.router, require_scope("ingest"))
    # Claim and resolve (SPEC §9): `agent`, which `admin` implies (routes/requests.py).
    _protected(app, requests.handoff_router, require_scope("agent"))
    _protected(app, api_keys.router, require_scope("admin"))  # GET too: keys are admin
    # The dry run stores and sends nothing: `read` for its POST too. Before `config`, whose
    # older GET /v1/topics it replaces.
    _protected(app, routing_routes.router, require_scope("read"))
    for module in (requests, admin, config, config_edits, channels):
        _protected(app, module.router)
    _protected(app, deliveries.router)  # GET /v1/deliveries, POST /v1/deliveries/retry
    install_docs(app)
    _document_ingest_body(app)
    install_ui(app, runtime)  # /ui: the dashboard, its own session auth (deskbell/ui/)
    return app


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorOut, "description": "invalid parameters"},
}
_AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERROR_RESPONSES,
    401: {"model": ErrorOut, "description": "missing or invalid credentials"},
    403: {"model": ErrorOut, "description": "the key lacks the scope this needs"},
    429: {"model": ErrorOut, "description": "rate limit; see Retry-After"},
    503: {"model": ErrorOut, "description": "database unavailable"},
}
_UNREADABLE = {
    "description": "the body cannot be read",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
}


def _protected(app: FastAPI, router: APIRouter, guard: Any = read_or_admin) -> None:
    app.include_router(router, dependencies=[Depends(guard)], responses=_AUTH_RESPONSES)


def _document_ingest_body(app: FastAPI) -> None:
    """The ingest route reads its body by hand; put its model into the OpenAPI components.
    And FastAPI answers 400 for a body it cannot even decode (before validation's 422): every
    operation that takes a body says so, so the schema lists every answer it can give."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        body = AssistanceRequestIn.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(body.pop("$defs", {}))
        components["AssistanceRequestIn"] = body
        for item in schema.get("paths", {}).values():
            for operation in item.values():
                if isinstance(operation, dict) and "requestBody" in operation:
                    operation["responses"].setdefault("400", _UNREADABLE)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
