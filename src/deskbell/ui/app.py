"""Mount the dashboard on the API's app: its pages (routes.py) and its static files."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from deskbell.ui.pages import UiState
from deskbell.ui.routes import router
from deskbell.wiring import Runtime

STATIC = Path(__file__).parent / "static"


def install_ui(app: FastAPI, runtime: Runtime) -> None:
    app.state.ui = UiState(runtime)
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
