"""`create_app(runtime)`: the FastAPI app around an already-built runtime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from deskbell import __version__
from deskbell.api.errors import install_error_handlers
from deskbell.api.routes import admin, ingest, ops, requests
from deskbell.models import AssistanceRequestIn
from deskbell.wiring import Runtime


def create_app(runtime: Runtime, *, start_workers: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start_workers:
            runtime.start_workers()
        try:
            yield
        finally:
            await runtime.aclose()

    app = FastAPI(
        title="deskbell",
        version=__version__,
        summary="Durable hand-off of chatbot assistance requests to Slack, email and more.",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    for module in (ingest, requests, admin, ops):
        app.include_router(module.router)
    _document_ingest_body(app)
    return app


def _document_ingest_body(app: FastAPI) -> None:
    """The ingest route reads its body by hand; put its model into the OpenAPI components."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        body = AssistanceRequestIn.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(body.pop("$defs", {}))
        components["AssistanceRequestIn"] = body
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
