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


@router.get("/readyz", responses={503: {"description": "not ready, with each reason"}})
async def readyz(runtime: RuntimeDep) -> Any:
    """Ready when the database answers and a valid config is active; a 503 lists what is not
    (`details`: `database`, `config`), so an operator sees every cause in one probe."""
    problems: dict[str, str] = {}
    try:
        await runtime.store.ping()
    except Exception as exc:
        log.warning("readiness_failed", check="database", error=str(exc))
        problems["database"] = "unreachable"
    active = getattr(runtime, "active", None)
    if active is None or not active.config.channels:
        problems["config"] = "no valid config loaded"
    if problems:
        code = "database_unavailable" if list(problems) == ["database"] else "not_ready"
        if list(problems) == ["config"]:
            code = "config_not_loaded"
        return error_response(503, code, "not ready: " + ", ".join(problems), problems)
    return JSONResponse({"status": "ready", "config": runtime.active.source})
