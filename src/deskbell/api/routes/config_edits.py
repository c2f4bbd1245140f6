"""Small config edits (SPEC §8), each a new version through the same checks as `PUT
/v1/config` (api/routes/config.py `ConfigWriter`), `If-Match` honoured the same way:

- `PUT /v1/channels/{name}`: the channel's block (JSON or YAML), created or replaced;
- `DELETE /v1/channels/{name}`: 409 `channel_in_use` while routes, the default, or deliveries
  not yet settled name it, listing them. With `?force=true` the routes drop it (a route left
  with no channel goes, a fallback naming it goes), the default drops it (`reject` when none is
  left), and its unsettled deliveries stay as they are: a worker claims them, finds no such
  channel and settles them `dead` ("not in the active config"); a delivery whose fallback it
  was gets no fallback (the fallback delivery is created and settled `dead` the same way);
- `PUT /v1/topics/{topic}`: `{"to": [...], "fallback": ..., "continue": ...}`, the route whose
  match is exactly `{topic: T}`, replaced where it is or added last (first match wins, so an
  earlier route matching T still takes it: `POST /v1/routes/test` shows what happens);
- `DELETE /v1/topics/{topic}`: that route removed.
"""

from __future__ import annotations

import copy
import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from deskbell.api.auth import PrincipalDep
from deskbell.api.deps import RuntimeDep
from deskbell.api.errors import ApiError
from deskbell.api.routes.config import (
    DOCUMENT_RESPONSES,
    INVALID_RESPONSE,
    STALE_RESPONSE,
    ConfigWriter,
    IfMatch,
    WriteOut,
    expected_version,
    read_document,
)
from deskbell.api.schemas import ErrorOut
from deskbell.config.changes import route_label

router = APIRouter(tags=["config"])

ChannelName = Annotated[str, Path(min_length=1, max_length=128)]
TopicName = Annotated[str, Path(min_length=1, max_length=64)]
_TOPIC = re.compile(r"[a-z0-9_.-]{1,64}")
_RESPONSES: dict[int | str, dict[str, Any]] = {
    **DOCUMENT_RESPONSES,
    200: {"model": WriteOut},
    404: {"model": ErrorOut},
    409: {"model": ErrorOut},
    412: STALE_RESPONSE,
    422: INVALID_RESPONSE,
}


def _topic(value: str) -> str:
    """The topic as ingest stores it (trimmed, lower-case), or 422."""
    topic = value.strip().lower()
    if not _TOPIC.fullmatch(topic):
        raise ApiError(
            422, "invalid_topic", "a topic is 1..64 characters of a-z, 0-9, '_', '.', '-'"
        )
    return topic


def _is_topic_route(route: Any, topic: str) -> bool:
    if not isinstance(route, dict):
        return False
    match = route.get("match")
    return (
        isinstance(match, dict)
        and set(match) == {"topic"}
        and isinstance(match["topic"], str)
        and match["topic"].strip().lower() == topic
        and route.get("when") is None
    )


@router.put(
    "/v1/channels/{name}",
    response_model=WriteOut,
    status_code=201,
    summary="Create or replace a channel",
    responses=_RESPONSES,
)
async def put_channel(
    name: ChannelName,
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    if_match: IfMatch = None,
) -> Response:
    """The body is the channel's block, as under `channels.<name>` in the file."""
    expected = expected_version(if_match)
    block = await read_document(request)
    writer = ConfigWriter(runtime)
    base, active = await writer.base()
    document = copy.deepcopy(base)
    channels = document.get("channels")
    document["channels"] = {**(channels if isinstance(channels, dict) else {}), name: block}
    return await writer.write(document, author=principal.name, expected=expected, active=active)


@router.delete(
    "/v1/channels/{name}",
    response_model=WriteOut,
    status_code=201,
    summary="Remove a channel",
    responses=_RESPONSES,
)
async def delete_channel(
    name: ChannelName,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    force: Annotated[bool, Query(description="remove it from routes and the default too")] = False,
    if_match: IfMatch = None,
) -> Response:
    expected = expected_version(if_match)
    writer = ConfigWriter(runtime)
    base, active = await writer.base()
    document = copy.deepcopy(base)
    channels = document.get("channels")
    if not isinstance(channels, dict) or name not in channels:
        raise ApiError(404, "not_found", f"no channel {name!r} in the active config")
    routes = [r for r in document.get("routes") or [] if isinstance(r, dict)]
    naming = [r for r in routes if name in (r.get("to") or []) or r.get("fallback") == name]
    default = document.get("default")
    in_default = isinstance(default, list) and name in default
    use = await runtime.store.config.channel_use(name)
    if not force and (naming or in_default or use.deliveries or use.fallbacks):
        raise ApiError(
            409,
            "channel_in_use",
            f"channel {name!r} is still in use; remove those first, or DELETE with ?force=true",
            {
                "routes": [route_label(r) for r in naming],
                "default": in_default,
                "deliveries": use.deliveries,
                "fallback_deliveries": use.fallbacks,
            },
        )
    del channels[name]
    document["routes"] = _without_channel(routes, name)
    if in_default:
        assert isinstance(default, list)
        document["default"] = [c for c in default if c != name] or "reject"
    return await writer.write(document, author=principal.name, expected=expected, active=active)


def _without_channel(routes: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    kept = []
    for route in routes:
        route = {**route, "to": [c for c in route.get("to") or [] if c != name]}
        if route.get("fallback") == name:
            del route["fallback"]
        if route["to"]:
            kept.append(route)
    return kept


@router.put(
    "/v1/topics/{topic}",
    response_model=WriteOut,
    status_code=201,
    summary="Create or replace the route of one topic",
    responses=_RESPONSES,
)
async def put_topic(
    topic: TopicName,
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    if_match: IfMatch = None,
) -> Response:
    """The body is `{"to": [...], "fallback": ..., "continue": ...}` (JSON or YAML): the
    route whose match is exactly `{topic: T}`."""
    expected = expected_version(if_match)
    name = _topic(topic)
    body = await read_document(request)
    if "match" in body or "when" in body:
        raise ApiError(
            422,
            "invalid_config",
            "the topic route's match is the topic in the path",
            [{"key": k, "why": "not allowed here"} for k in ("match", "when") if k in body],
        )
    writer = ConfigWriter(runtime)
    base, active = await writer.base()
    document = copy.deepcopy(base)
    routes = list(document.get("routes") or [])
    route = {"match": {"topic": name}, **body}
    for index, old in enumerate(routes):
        if _is_topic_route(old, name):
            routes[index] = route
            break
    else:
        routes.append(route)
    document["routes"] = routes
    return await writer.write(document, author=principal.name, expected=expected, active=active)


@router.delete(
    "/v1/topics/{topic}",
    response_model=WriteOut,
    status_code=201,
    summary="Remove the route of one topic",
    responses=_RESPONSES,
)
async def delete_topic(
    topic: TopicName, runtime: RuntimeDep, principal: PrincipalDep, if_match: IfMatch = None
) -> Response:
    expected = expected_version(if_match)
    name = _topic(topic)
    writer = ConfigWriter(runtime)
    base, active = await writer.base()
    document = copy.deepcopy(base)
    routes = list(document.get("routes") or [])
    kept = [r for r in routes if not _is_topic_route(r, name)]
    if len(kept) == len(routes):
        raise ApiError(404, "not_found", f"no route whose match is exactly {{topic: {name}}}")
    document["routes"] = kept
    return await writer.write(document, author=principal.name, expected=expected, active=active)
