"""Annotated dependency aliases, so a route says `runtime: RuntimeDep` and nothing more."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request

from deskbell.wiring import Runtime


def get_runtime(request: Request) -> Runtime:
    return cast("Runtime", request.app.state.runtime)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
