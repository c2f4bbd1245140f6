"""The routing config at run time (SPEC §8): read it, check it, replace it, list its versions,
roll back. (`GET /v1/topics` is api/routes/routing.py's.)

Every write goes through `ConfigWriter.write`: masked secrets kept from the active version,
the checks of `deskbell config check` (each problem a 422 detail `{key, why}`), literal
secrets sealed, then one new version, and this node switches to it at once
(`runtime.live.sync()`); every other node follows within `config_poll_seconds`.

Concurrency: `If-Match: "<n>"` (or a bare `<n>`; `0`: no version yet) makes a write
conditional on version n being active, else 412 `stale_version` naming the active one. Without
it the last writer wins. Every answer naming the active version has `ETag: "<n>"`.

A document equal to the active one (same canonical text: key order, and secrets that the
active version already holds, do not count) stores nothing: 200 with the active version and
`changed: false`. A new version answers 201.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Path, Request, Response
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from deskbell.api.auth import PrincipalDep
from deskbell.api.deps import RuntimeDep
from deskbell.api.errors import ApiError
from deskbell.api.limits import read_body
from deskbell.api.schemas import ErrorOut
from deskbell.config.changes import summarize
from deskbell.config.destinations import config_warnings
from deskbell.config.document import (
    check_document,
    digest,
    document_from_text,
    redacted,
)
from deskbell.config.load import routing_table
from deskbell.config.schema import DeskbellConfig
from deskbell.config.secrets import keep_masked, seal_document
from deskbell.errors import ConfigError, DeskbellError, NotFound, StaleVersion
from deskbell.storage.config_versions import ConfigVersion
from deskbell.wiring import Runtime

log = structlog.get_logger(__name__)
router = APIRouter(tags=["config"])

MAX_CONFIG_BYTES = 1024 * 1024
INVALID_RESPONSE = {"model": ErrorOut, "description": "invalid_config: each key and why in details"}
STALE_RESPONSE = {"model": ErrorOut, "description": "stale_version: another version is active"}
# What `read_document` may answer, for every route that takes a config document.
DOCUMENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "a bad If-Match, or a body that is not UTF-8"},
    415: {"model": ErrorOut, "description": "the body is neither YAML nor JSON"},
}
IfMatch = Annotated[
    str | None,
    Header(description='the version this write replaces: `"3"` (or `3`); `0`: none yet'),
]


class VersionBrief(BaseModel):
    number: int
    author: str
    origin: str
    created_at: datetime
    active: bool
    digest: str
    summary: dict[str, Any]


class VersionOut(VersionBrief):
    document: dict[str, Any]  # secrets: `${VAR}` as written, literals `**********`


class VersionsOut(BaseModel):
    items: list[VersionBrief]


class WriteOut(VersionOut):
    changed: bool  # false: the document was the active one's; nothing was stored
    warnings: list[str]


class ConfigOut(BaseModel):
    version: int | None  # the active stored version (None: none stored yet)
    document: dict[str, Any] | None  # that version as written, secrets redacted
    source: str  # where this node's running config came from
    config: dict[str, Any]  # this node's running config, validated, secrets redacted


class RouteRow(BaseModel):
    match: str
    channels: str
    notes: str


class ValidOut(BaseModel):
    valid: bool
    routing: list[RouteRow]
    warnings: list[str]
    summary: dict[str, Any]  # what would change from the active version


def invalid_config(exc: ConfigError) -> ApiError:
    problems = exc.problems or [("(config)", str(exc))]
    return ApiError(
        422,
        "invalid_config",
        f"the config is invalid: {len(problems)} problem(s)",
        [{"key": key, "why": why} for key, why in problems],
    )


def expected_version(if_match: str | None) -> int | None:
    """`"3"`, `W/"3"` or `3` -> 3; absent or `*` -> None (no condition)."""
    if if_match is None or if_match.strip() == "*":
        return None
    text = if_match.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 9:
        raise ApiError(
            400, "invalid_if_match", 'If-Match must be a config version number, e.g. "3"'
        )
    return int(text)


def etag(number: int | None) -> dict[str, str]:
    return {} if number is None else {"ETag": f'"{number}"'}


async def read_document(request: Request) -> dict[str, Any]:
    """The body as a document: YAML (`application/yaml`, `text/yaml`, `application/x-yaml`)
    or JSON (`application/json`)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in {"application/json", "application/yaml", "application/x-yaml", "text/yaml"}:
        raise ApiError(
            415,
            "unsupported_media_type",
            "send the config as application/yaml (the file's text) or application/json",
        )
    body = await read_body(request, MAX_CONFIG_BYTES)
    try:
        return document_from_text(body.decode("utf-8"), media)
    except UnicodeDecodeError as exc:
        raise ApiError(400, "invalid_encoding", "the body is not UTF-8") from exc
    except ConfigError as exc:
        raise invalid_config(exc) from exc


def version_data(version: ConfigVersion, runtime: Runtime, **extra: Any) -> dict[str, Any]:
    return {
        "number": version.number,
        "author": version.author,
        "origin": version.origin,
        "created_at": version.created_at,
        "active": version.active,
        "digest": version.digest,
        "summary": version.summary,
        "document": redacted(version.document, runtime.registry),
        **extra,
    }


class ConfigWriter:
    """Check a whole new document and store it as the active version."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.key = runtime.settings.secret_key.get_secret_value() or None

    def check(
        self, document: dict[str, Any], previous: dict[str, Any] | None
    ) -> tuple[DeskbellConfig, dict[str, Any]]:
        """(the config, the document to store): masked secrets kept, every check run, literal
        secrets sealed. 422 lists every problem of the checks and of the sealing together."""
        registry = self.runtime.registry
        try:
            document = keep_masked(document, registry, previous)
        except ConfigError as exc:
            raise invalid_config(exc) from exc
        problems: list[tuple[str, str]] = []
        config = sealed = None
        try:
            config = check_document(
                document, registry, now=self.runtime.clock.now(), secret_key=self.key
            )
        except ConfigError as exc:
            problems.extend(exc.problems or [("(config)", str(exc))])
        try:
            sealed = seal_document(document, registry, self.key, previous)
        except ConfigError as exc:
            problems.extend(exc.problems)
        if problems or config is None or sealed is None:
            raise invalid_config(ConfigError(problems=problems))
        return config, sealed

    def check_stored(self, document: dict[str, Any]) -> DeskbellConfig:
        """A stored version checked again on this node, as it is (already sealed)."""
        try:
            return check_document(
                document, self.runtime.registry, now=self.runtime.clock.now(), secret_key=self.key
            )
        except ConfigError as exc:
            raise invalid_config(exc) from exc

    async def base(self) -> tuple[dict[str, Any], ConfigVersion | None]:
        """The document an edit starts from: the active version's."""
        active = await self.runtime.store.config.active()
        if active is None:
            raise ApiError(
                409,
                "no_config_version",
                "no config version is stored yet: PUT /v1/config a whole document first",
            )
        return active.document, active

    async def write(
        self,
        document: dict[str, Any],
        *,
        author: str,
        expected: int | None,
        origin: str = "api",
        active: ConfigVersion | None = None,
    ) -> Response:
        """Store `document` unless it is the active one; 201 (new) or 200 (unchanged)."""
        store = self.runtime.store.config
        if active is None:
            active = await store.active()
        previous = active.document if active else None
        config, sealed = self.check(document, previous)
        warnings = config_warnings(config)
        unchanged = active is not None and digest(sealed) == active.digest
        if unchanged and expected in (None, active.number if active else None):
            assert active is not None
            return self.answer(active, 200, changed=False, warnings=warnings)
        try:
            version = await store.create(
                sealed,
                author=author,
                origin=origin,
                summary=summarize(previous, sealed),
                expected=expected,
            )
        except StaleVersion as exc:
            raise stale(exc) from exc
        log.info("config_version_created", version=version.number, author=author, origin=origin)
        await self.apply()
        return self.answer(version, 201, changed=True, warnings=warnings)

    async def apply(self) -> None:
        """This node switches now; if it cannot, its watcher retries (and logs why)."""
        try:
            await self.runtime.live.sync()
        except (DeskbellError, SQLAlchemyError, OSError) as exc:
            log.warning("config_sync_failed", error=str(exc))

    def answer(self, version: ConfigVersion, status: int, **extra: Any) -> Response:
        out = WriteOut.model_validate(version_data(version, self.runtime, **extra))
        headers = etag(version.number)
        if status == 201:
            headers["Location"] = f"/v1/config/versions/{version.number}"
        return Response(
            out.model_dump_json(), status, headers=headers, media_type="application/json"
        )


def stale(exc: StaleVersion) -> ApiError:
    return ApiError(
        412,
        "stale_version",
        f"version {exc.active} is active, not {exc.expected}: read it again and retry",
        {"active": exc.active, "expected": exc.expected},
        headers=etag(exc.active),
    )


@router.get("/v1/config", response_model=ConfigOut, summary="The active config, redacted")
async def get_config(runtime: RuntimeDep, response: Response) -> ConfigOut:
    active = await runtime.store.config.active()
    running = runtime.active
    response.headers.update(etag(active.number if active else None))
    return ConfigOut(
        version=active.number if active else None,
        document=redacted(active.document, runtime.registry) if active else None,
        source=running.source,
        config=running.config.redacted(),
    )


@router.put(
    "/v1/config",
    response_model=WriteOut,
    status_code=201,
    summary="Replace the whole config: a new version, active at once",
    responses={
        **DOCUMENT_RESPONSES,
        200: {"model": WriteOut},
        412: STALE_RESPONSE,
        422: INVALID_RESPONSE,
    },
)
async def put_config(
    request: Request, runtime: RuntimeDep, principal: PrincipalDep, if_match: IfMatch = None
) -> Response:
    """The body is the whole config, YAML (the file's text) or JSON. 201: the new version;
    200: the same document as the active version, nothing stored."""
    expected = expected_version(if_match)
    document = await read_document(request)
    return await ConfigWriter(runtime).write(document, author=principal.name, expected=expected)


@router.post(
    "/v1/config/validate",
    response_model=ValidOut,
    summary="Check a config without storing it",
    responses={**DOCUMENT_RESPONSES, 422: INVALID_RESPONSE},
)
async def validate_config(request: Request, runtime: RuntimeDep) -> ValidOut:
    document = await read_document(request)
    active = await runtime.store.config.active()
    previous = active.document if active else None
    config, sealed = ConfigWriter(runtime).check(document, previous)
    return ValidOut(
        valid=True,
        routing=[RouteRow(match=m, channels=c, notes=n) for m, c, n in routing_table(config)],
        warnings=config_warnings(config),
        summary=summarize(previous, sealed),
    )


@router.get("/v1/config/versions", response_model=VersionsOut, summary="Versions, newest first")
async def list_versions(runtime: RuntimeDep) -> VersionsOut:
    versions = await runtime.store.config.list()
    return VersionsOut(
        items=[
            VersionBrief.model_validate(
                {k: v for k, v in version_data(x, runtime).items() if k != "document"}
            )
            for x in versions
        ]
    )


VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1, description="a version number")]


@router.get(
    "/v1/config/versions/{number}",
    response_model=VersionOut,
    responses={404: {"model": ErrorOut}},
)
async def get_version(number: VersionNumber, runtime: RuntimeDep) -> VersionOut:
    version = await runtime.store.config.get(number)
    if version is None:
        raise ApiError(404, "not_found", f"no config version {number}")
    return VersionOut.model_validate(version_data(version, runtime))


@router.post(
    "/v1/config/versions/{number}/activate",
    response_model=WriteOut,
    status_code=201,
    summary="Roll back: a new version with version n's document",
    responses={
        200: {"model": WriteOut},
        400: {"model": ErrorOut, "description": "a bad If-Match"},
        404: {"model": ErrorOut},
        412: STALE_RESPONSE,
        422: INVALID_RESPONSE,
    },
)
async def activate_version(
    number: VersionNumber, runtime: RuntimeDep, principal: PrincipalDep, if_match: IfMatch = None
) -> Response:
    """Version n's document, checked again on this node (its environment may have changed),
    becomes a new version with origin `rollback`; 200 when it is the active one already."""
    expected = expected_version(if_match)
    store = runtime.store.config
    target = await store.get(number)
    if target is None:
        raise ApiError(404, "not_found", f"no config version {number}")
    writer = ConfigWriter(runtime)
    writer.check_stored(target.document)
    before = await store.active_number()
    try:
        version = await store.activate(number, author=principal.name, expected=expected)
    except StaleVersion as exc:
        raise stale(exc) from exc
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    changed = version.number != before
    if changed:
        log.info("config_rollback", version=version.number, rollback_of=number)
        await writer.apply()
    return writer.answer(version, 201 if changed else 200, changed=changed, warnings=[])
