"""Annotated dependency aliases, so a route says `runtime: RuntimeDep` and nothing more, and
the checks of path ids and query times every route shares."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, cast

from fastapi import Depends, Path, Request
from pydantic import AwareDatetime, BeforeValidator

from deskbell.api.errors import ApiError
from deskbell.storage.ids import parse_id
from deskbell.wiring import Runtime


async def get_runtime(request: Request) -> Runtime:
    """Async so FastAPI calls it inline: a plain `def` dependency runs in the threadpool, a
    thread hop on every request."""
    return cast("Runtime", request.app.state.runtime)


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def _known_form(value: str, what: str) -> str:
    """The id in its stored form. Ids are UUIDs: any other value names nothing, so it is
    answered 404 like an unknown id, before the database (where PostgreSQL would refuse a
    NUL byte with an error). It is not echoed back: it may be long or binary."""
    key = parse_id(value)
    if key is None:
        raise ApiError(404, "not_found", f"no {what} has this id (ids are UUIDs)")
    return key


async def _request_id(
    request_id: Annotated[str, Path(description="the request's id, a UUID")],
) -> str:
    return _known_form(request_id, "assistance request")


async def _delivery_id(
    delivery_id: Annotated[str, Path(description="the delivery's id, a UUID")],
) -> str:
    return _known_form(delivery_id, "delivery")


RequestId = Annotated[str, Depends(_request_id)]
DeliveryId = Annotated[str, Depends(_delivery_id)]


_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_8601(value: object) -> object:
    """Only ISO 8601 date-time text goes on to pydantic's (strict RFC 3339) parser, which alone
    would also take a number such as `0.5` as Unix seconds. (`datetime.fromisoformat` is no
    check: on 3.11 it skips any character before the zone.)"""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO_DATE_TIME.match(value)):
        return value
    raise ValueError("expected an ISO 8601 time with a time zone, e.g. 2026-03-01T12:00:00Z")


# An ISO 8601 time with its zone (`Z` or an offset), as a query parameter takes it.
IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_8601)]
