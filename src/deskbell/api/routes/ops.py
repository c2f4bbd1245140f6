"""Liveness, readiness and what the active config routes."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from deskbell.api.deps import RuntimeDep
from deskbell.api.errors import error_response
from deskbell.api.schemas import TopicOut, TopicsOut

router = APIRouter(tags=["operations"])
log = structlog.get_logger(__name__)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive; says nothing about the database."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready, with the reason"}})
async def readyz(runtime: RuntimeDep) -> Any:
    try:
        await runtime.store.ping()
    except Exception as exc:
        log.warning("readiness_failed", error=str(exc))
        return error_response(503, "database_unavailable", "database unreachable")
    return JSONResponse({"status": "ready", "config": runtime.active.source})


@router.get("/v1/topics", response_model=TopicsOut)
async def topics(runtime: RuntimeDep) -> TopicsOut:
    router_ = runtime.active.router
    config = runtime.active.config
    return TopicsOut(
        topics=[
            TopicOut(topic=t, channels=router_.channels_for_topic(t))
            for t in router_.known_topics()
        ],
        default=config.default,
    )
