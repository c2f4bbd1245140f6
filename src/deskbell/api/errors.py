"""Every error answer has one shape: {"error": {"code", "message", "details"}} (SPEC §1)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import Scope

from deskbell.errors import DeskbellError


class ApiError(DeskbellError):
    """An answer other than success: its status, code, message, details and headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


def validation_details(exc: ValidationError | RequestValidationError) -> list[dict[str, Any]]:
    """Where and why, without echoing the (possibly large or sensitive) input back."""
    return [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]


_HTTP_CODES = {404: "not_found"}
_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def on_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "validation_failed", "invalid request", validation_details(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:
            return method_not_allowed(request)
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)


def method_not_allowed(request: Request) -> JSONResponse:
    """405 with every method this path answers in `Allow` (and in `details`).

    Starlette names only the methods of the first route matching the path, and FastAPI makes
    one route per method: a PUT on /v1/assistance-requests was told `Allow: POST` though GET
    lists. So each method is tried against the routes (FastAPI wraps included routers in
    routes of its own, so asking each route for its methods finds none). HEAD is listed
    wherever GET is (`DeskbellAPI` answers it)."""
    # A mount that matched rewrote root_path: match from the app's own root again.
    root = request.scope.get("app_root_path", request.scope.get("root_path", ""))
    scope = {**request.scope, "root_path": root}
    allowed = {
        method
        for method in _METHODS
        for route in request.app.router.routes
        if _answers(route, scope, method)
    }
    if "GET" in allowed:
        allowed.add("HEAD")
    names = sorted(allowed)
    return error_response(
        405,
        "method_not_allowed",
        f"{request.method} is not allowed here",
        {"allowed": names},
        headers={"Allow": ", ".join(names)},
    )


def _answers(route: BaseRoute, scope: Scope, method: str) -> bool:
    """A mount is static files (the docs' assets): GET only, whatever it says of others."""
    if isinstance(route, Mount) and method != "GET":
        return False
    return route.matches({**scope, "method": method})[0] is Match.FULL
