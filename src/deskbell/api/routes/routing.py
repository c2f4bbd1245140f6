"""What routing does: `POST /v1/routes/test` (the dry run) and `GET /v1/topics`.

Both answer from `routing/explain.py`, which asks the same `Router` ingest uses, so neither
can disagree with what ingest stores. The dry run takes a request as ingest does (the
description may be left out) and, optionally, a whole config document to try instead of the
active one (`config`, YAML text or a JSON object, validated as `deskbell config check` does)
and a time (`at`) for routes with a time window. Nothing is stored and nothing is sent, so
it needs only the `read` scope.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deskbell.api.deps import IsoTime, RuntimeDep
from deskbell.api.errors import ApiError, validation_details
from deskbell.api.schemas import ErrorOut, RouteOut, TopicOut, TopicsOut
from deskbell.config.document import build_config, document_from_text
from deskbell.config.load import build_router
from deskbell.errors import ConfigError
from deskbell.models import AssistanceRequestIn
from deskbell.routing.explain import explain, topic_views
from deskbell.routing.router import Router
from deskbell.wiring import Runtime

router = APIRouter(tags=["routing"])

DRY_RUN_DESCRIPTION = "(dry run)"


class RouteTestIn(BaseModel):
    """An assistance request as `POST /v1/assistance-requests` takes it (topic, customer,
    language, metadata, ...; `description` may be left out), plus `config` and `at`."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "example": {"topic": "sales", "language": "es", "metadata": {"seats": 60}},
        },
    )

    config: str | dict[str, Any] | None = Field(
        default=None,
        description="a whole config document to test instead of the active one: YAML text "
        "or the same as a JSON object",
    )
    at: IsoTime | None = Field(
        default=None, description="the time to route at (time windows); default: now"
    )


class RouteTestOut(BaseModel):
    topic: str
    at: datetime
    config: str = Field(description="`active` or `given`")
    channels: list[str] = Field(description="where ingest would deliver it now")
    routes: list[RouteOut] = Field(description="the routes that matched, in order")
    default: bool = Field(description="no route matched: the default decided")
    rejected: bool = Field(description="ingest would refuse it (422 unknown_topic)")


@router.post(
    "/v1/routes/test",
    response_model=RouteTestOut,
    summary="Dry run: where a request would go, and which route sent it there",
    responses={422: {"model": ErrorOut, "description": "invalid request or config"}},
)
async def route_test(runtime: RuntimeDep, body: Annotated[RouteTestIn, Body()]) -> dict[str, Any]:
    request = _request(body.model_extra or {})
    active = body.config is None
    routes = runtime.active.router if active else _given_router(runtime, body.config)
    at = body.at or runtime.clock.now()
    answer = explain(routes, request, lambda: at)
    return {
        "topic": request.topic,
        "at": at,
        "config": "active" if active else "given",
        **answer.data(),
    }


@router.get("/v1/topics", response_model=TopicsOut, summary="What routing does with each topic")
async def topics(runtime: RuntimeDep) -> TopicsOut:
    """Every topic a route names, with the channels a request of only that topic gets now,
    and each route its requests may take with its condition (`language=es`, a time window),
    so a topic whose Spanish requests go elsewhere says so."""
    views = topic_views(runtime.active.router, runtime.clock.now)
    return TopicsOut(
        topics=[TopicOut.model_validate(view.data()) for view in views],
        default=runtime.active.config.default,
    )


def _request(fields: dict[str, Any]) -> AssistanceRequestIn:
    try:
        return AssistanceRequestIn.model_validate({"description": DRY_RUN_DESCRIPTION, **fields})
    except ValidationError as exc:
        details = [{**d, "loc": ["body", *d["loc"]]} for d in validation_details(exc)]
        raise ApiError(422, "validation_failed", "invalid assistance request", details) from exc


def _given_router(runtime: Runtime, document: str | dict[str, Any] | None) -> Router:
    """The router of a config sent with the dry run; 422 `invalid_config` naming each key."""
    try:
        data = (
            document_from_text(document, "application/yaml")
            if isinstance(document, str)
            else document
        )
        config = build_config(data or {}, runtime.registry, secret_key=runtime.settings.secret_key)
        return build_router(config)
    except ConfigError as exc:
        problems = getattr(exc, "problems", None) or []
        details = [{"key": key, "why": why} for key, why in problems] or None
        raise ApiError(422, "invalid_config", f"config: {exc}", details) from exc
