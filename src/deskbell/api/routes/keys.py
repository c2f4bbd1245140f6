"""API keys over HTTP (SPEC §3, scope `admin`): create (the key answered this once), list
(never a key or its hash), revoke.

The same KeyStore as `deskbell apikey`, so keys made either way are one set; every request
looks its key up in the database (storage/keys.py), so a revoke here is refused by every node
from its next request on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from deskbell.api.auth import PrincipalDep
from deskbell.api.deps import RuntimeDep
from deskbell.api.errors import ApiError
from deskbell.api.schemas import ErrorOut, render
from deskbell.errors import InvalidState, NotFound
from deskbell.models import ApiKey, Scope
from deskbell.storage.ids import parse_id
from deskbell.storage.keys import MAX_NAME

router = APIRouter(tags=["api keys"])
log = structlog.get_logger(__name__)


class NewKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=MAX_NAME,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="a unique label, e.g. the bot that will use the key",
    )
    scope: Scope = Field(
        description="ingest, read, agent or admin (admin implies read and agent; agent, read)"
    )


class KeyOut(BaseModel):
    id: str
    name: str
    scope: Scope
    prefix: str = Field(description="the key's first characters, to recognise it")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    active: bool


class NewKeyOut(BaseModel):
    id: str
    name: str
    scope: Scope
    key: str = Field(description="the key itself: shown this once, never stored")


class KeysOut(BaseModel):
    items: list[KeyOut]


def key_data(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "scope": key.scope.value,
        "prefix": key.prefix,
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
        "active": key.active,
    }


def _json(data: Any, status: int = 200) -> Response:
    return Response(render(data), status, media_type="application/json")


@router.post(
    "/v1/api-keys",
    status_code=201,
    response_model=NewKeyOut,
    responses={409: {"model": ErrorOut, "description": "a key with this name exists"}},
)
async def create_key(body: NewKeyIn, runtime: RuntimeDep, principal: PrincipalDep) -> Response:
    """A new key; the answer holds it this once (only its hash is stored)."""
    try:
        record, plain = await runtime.store.keys.create(body.scope, runtime.clock.now(), body.name)
    except InvalidState as exc:
        raise ApiError(409, "name_taken", str(exc), {"name": body.name}) from exc
    log.info(
        "api_key_created",
        key=record.name,
        id=record.id,
        scope=record.scope.value,
        by=principal.name,
    )
    data = {"id": record.id, "name": record.name, "scope": record.scope.value, "key": plain}
    return _json(data, 201)


@router.get("/v1/api-keys", response_model=KeysOut)
async def list_keys(runtime: RuntimeDep) -> Response:
    """Every stored key, revoked ones included, oldest first; never a key or its hash. Keys
    from DESKBELL_API_KEYS are not stored and not listed."""
    return _json({"items": [key_data(k) for k in await runtime.store.keys.list()]})


@router.delete(
    "/v1/api-keys/{key_id}",
    response_model=KeyOut,
    responses={404: {"model": ErrorOut}},
)
async def revoke_key(
    key_id: Annotated[str, Path(description="the key's id, a UUID")],
    runtime: RuntimeDep,
    principal: PrincipalDep,
) -> Response:
    """Revoke a key: every node refuses it from its next request on. Revoking a revoked
    key answers it unchanged."""
    stored_id = parse_id(key_id)
    if stored_id is None:
        raise ApiError(404, "not_found", "no API key has this id (ids are UUIDs)")
    try:
        record = await runtime.store.keys.revoke(stored_id, runtime.clock.now(), id_only=True)
    except NotFound as exc:
        raise ApiError(404, "not_found", f"no API key {stored_id}") from exc
    log.info("api_key_revoked", key=record.name, id=record.id, by=principal.name)
    return _json(key_data(record))
