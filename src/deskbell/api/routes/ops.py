"""Liveness and readiness: open to everyone (no credentials), for load balancers and probes."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from deskbell.api.deps import RuntimeDep
from deskbell.api.errors import error_response

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
