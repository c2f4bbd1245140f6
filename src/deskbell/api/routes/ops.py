"""Liveness and readiness: open to everyone (no credentials), for load balancers and probes."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from deskbell.api.auth import get_authenticator
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
    ("oidc",): "oidc_keys_unavailable",
}


@router.get("/readyz", responses={503: {"description": "not ready, with each reason"}})
async def readyz(request: Request, runtime: RuntimeDep) -> Any:
    """Ready when the database answers, a write commits (`storage/health.py`: a heartbeat
    UPDATE within 1 s, probed at most once a second) and a valid config is active; a 503
    lists what is not (`details`: `database`, `database_writes`, `config`), so an operator
    sees every cause in one probe. With OIDC on, `oidc` is not ready while the issuer's
    signing keys are not cached (never fetched, or gone after a long outage): tokens get 503
    then, though API keys still work."""
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
    tokens = get_authenticator(request).tokens
    if tokens is not None:
        oidc_problem = await tokens.keys.readiness()
        if oidc_problem is not None:
            problems["oidc"] = oidc_problem
    if problems:
        code = _CODES.get(tuple(problems), "not_ready")
        return error_response(503, code, "not ready: " + ", ".join(problems), problems)
    return JSONResponse({"status": "ready", **_config_state(runtime)})


def _config_state(runtime: Any) -> dict[str, Any]:
    """Which stored config version this process runs (SPEC §8) and, when it refused the
    active one (a `${VAR}` it lacks, a secret it cannot open), which and why. Such a node
    stays ready (200): it keeps serving the config it runs, which is valid; taking every
    node out of service because a new version cannot be built would turn a bad config push
    into an outage. The refusal is logged (`config_refused`) and shown here and by
    `deskbell_config_version` per process."""
    live = runtime.live
    state: dict[str, Any] = {"config": runtime.active.source, "config_version": live.number}
    if live.error is not None:
        state["config_refused"] = {"version": live.refused, "reason": live.error}
    return state
