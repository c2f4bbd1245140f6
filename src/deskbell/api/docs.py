"""`/docs` (Swagger UI) and `/redoc`, served with their assets from the installed package.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a host without internet
access (or behind a strict proxy) `/docs` was a blank page. The `fastapi-offline` package
ships the same bundles; they are served from `/docs/assets`, and the pages name no other
host: Swagger UI's validator badge (which would fetch from validator.swagger.io) is off and
ReDoc does not load Google Fonts. Like FastAPI's, the pages and `/openapi.json` are open.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"
_OAUTH2_REDIRECT = "/docs/oauth2-redirect"
_SWAGGER_PARAMETERS = {"validatorUrl": None}  # no badge fetched from validator.swagger.io


def assets_directory() -> str:
    """The packaged Swagger UI and ReDoc bundles (fastapi-offline's `static` folder)."""
    return str(files("fastapi_offline") / "static")


def install_docs(app: FastAPI) -> None:
    """For an app created with `docs_url=None, redoc_url=None`."""
    app.mount(ASSETS, StaticFiles(directory=assets_directory()), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            oauth2_redirect_url=root + _OAUTH2_REDIRECT,
            swagger_ui_parameters=_SWAGGER_PARAMETERS,
        )

    @app.get(_OAUTH2_REDIRECT, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
