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


_CODES: dict[tuple[str, ...], str] = {
    ("database",): "database_unavailable",
    ("database_writes",): "database_writes_failing",
    ("config",): "config_not_loaded",
}


@router.get("/readyz", responses={503: {"description": "not ready, with each reason"}})
async def readyz(runtime: RuntimeDep) -> Any:
    """Ready when the database answers, a write commits (`storage/health.py`: a heartbeat
    UPDATE within 1 s, probed at most once a second) and a valid config is active; a 503
    lists what is not (`details`: `database`, `database_writes`, `config`), so an operator
    sees every cause in one probe."""
    problems: dict[str, str] = {}
    try:
        await runtime.store.reads.ping()
    except Exception as exc:
        log.warning("readiness_failed", check="database", error=str(exc))
        problems["database"] = "unreachable"
    else:
        write_problem = await runtime.write_probe.check()  # logs its own changes
        if write_problem is not None:
            problems["database_writes"] = write_problem
    active = getattr(runtime, "active", None)
    if active is None or not active.config.channels:
        problems["config"] = "no valid config loaded"
    if problems:
        code = _CODES.get(tuple(problems), "not_ready")
        return error_response(503, code, "not ready: " + ", ".join(problems), problems)
    return JSONResponse({"status": "ready", "config": runtime.active.source})
