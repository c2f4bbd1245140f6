"""The dashboard's pages under /ui (SPEC §10): requests, one request, dead letters, channels,
the routing config, API keys, login and logout.

GET pages need a logged-in session (or auth off); every POST checks the CSRF token and then
the scope the API would ask: `agent` for claim/resolve, `admin` for everything else. Read-only
sessions see no buttons they cannot use, and are refused (403) if they post anyway.
"""

from __future__ import annotations

import difflib
from datetime import datetime, timedelta
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from deskbell import handoff
from deskbell.api.auth import get_authenticator
from deskbell.api.errors import ApiError
from deskbell.api.routes.config import ConfigWriter
from deskbell.channels.kit.sample import send_sample
from deskbell.config.document import document_from_text, redacted
from deskbell.errors import ConfigError, InvalidState, NotFound
from deskbell.models import DeliveryStatus, HandoffState, Scope
from deskbell.storage.ids import parse_id
from deskbell.storage.ledger import DeliveryFilter, DeliveryLedger
from deskbell.ui.pages import (
    Caller,
    caller,
    checked_post,
    clean,
    page,
    read_form,
    redirect,
    refusal,
    runtime_of,
    ui_state,
)
from deskbell.ui.session import CSRF_FIELD, Session, Sessions, csrf_ok

router = APIRouter(prefix="/ui", include_in_schema=False)
CallerDep = Annotated[Caller, Depends(caller)]

WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(days=1),
           "7d": timedelta(days=7)}  # fmt: skip
PAGE_SIZE = 50


def _login_first(request: Request, who: Caller) -> Response | None:
    return None if who.logged_in else redirect("/ui/login", who, request)


def _since(window: str | None, request: Request) -> datetime | None:
    delta = WINDOWS.get(window or "")
    return None if delta is None else runtime_of(request).clock.now() - delta


def _enum(kind: Any, value: str | None) -> Any:
    try:
        return None if not value else kind(value)
    except ValueError:
        return None


@router.get("")
async def home(request: Request, who: CallerDep) -> Response:
    return _login_first(request, who) or redirect("/ui/requests", who, request)


# -- login ---------------------------------------------------------------------------------


@router.get("/login")
async def login_form(request: Request, who: CallerDep) -> Response:
    return page(request, who, "login.html", error=None)


@router.post("/login")
async def login(request: Request, who: CallerDep) -> Response:
    form = await read_form(request)
    if who.is_new or not csrf_ok(who.session, form.get(CSRF_FIELD)):
        return refusal(request, who, 403, "The form's CSRF token is missing or wrong.")
    credential = form.get("credential", "").strip()
    if not credential:
        return page(request, who, "login.html", 400, error="Paste an API key or a token.")
    headers = {"authorization": f"Bearer {credential}"}
    probe = _Incoming(request, headers)
    try:
        principal = await get_authenticator(request).authenticate(probe)
    except ApiError as exc:
        return page(request, who, "login.html", exc.status, error=exc.message)
    if not (principal.scopes & {Scope.READ, Scope.AGENT, Scope.ADMIN}):
        return page(request, who, "login.html", 403, error="This key may only ingest.")
    # A new CSRF token with the login (no session fixation).
    session = Session(Sessions.fresh().csrf, principal.name, principal.kind, principal.scopes)
    response = redirect("/ui/requests")
    ui_state(request).sessions.write(request, response, session)
    return response


class _Incoming:
    """What `Authenticator.authenticate` reads (api/incoming.py): the login form's credential
    as the Authorization header, the request's scope otherwise."""

    def __init__(self, request: Request, headers: dict[str, str]) -> None:
        self.scope = request.scope
        self.headers = headers
        self.receive = request.receive


@router.post("/logout")
async def logout(request: Request, who: CallerDep) -> Response:
    form = await read_form(request)
    if not csrf_ok(who.session, form.get(CSRF_FIELD)):
        return refusal(request, who, 403, "The form's CSRF token is missing or wrong.")
    response = redirect("/ui/login")
    ui_state(request).sessions.write(request, response, Session(who.session.csrf))
    return response


# -- requests ------------------------------------------------------------------------------


async def _requests(request: Request) -> tuple[list[Any], dict[str, str]]:
    q = clean(dict(request.query_params))
    items, _ = await runtime_of(request).store.reads.list_requests(
        topic=q.get("topic"),
        status=_enum(DeliveryStatus, q.get("status")),
        handoff=_enum(HandoffState, q.get("handoff")),
        since=_since(q.get("since"), request),
        limit=PAGE_SIZE,
    )
    return items, q


@router.get("/requests")
async def requests_page(request: Request, who: CallerDep) -> Response:
    if (gone := _login_first(request, who)) is not None:
        return gone
    items, q = await _requests(request)
    return page(
        request,
        who,
        "requests.html",
        items=items,
        q=q,
        statuses=[s.value for s in DeliveryStatus],
        handoffs=[s.value for s in HandoffState],
        windows=list(WINDOWS),
        query=str(request.query_params),
    )


@router.get("/requests/rows")
async def requests_rows(request: Request, who: CallerDep) -> Response:
    """The table body alone: what the list's htmx poll swaps in every few seconds."""
    if not who.logged_in:
        return refusal(request, who, 401, "Log in again.")
    items, _ = await _requests(request)
    return page(request, who, "_request_rows.html", items=items)


@router.get("/requests/{request_id}")
async def request_page(request_id: str, request: Request, who: CallerDep) -> Response:
    if (gone := _login_first(request, who)) is not None:
        return gone
    runtime = runtime_of(request)
    stored = await runtime.store.reads.get_request(request_id)
    if stored is None:
        return refusal(request, who, 404, "No such assistance request.")
    attempts = await DeliveryLedger(runtime.db).attempts_of(stored.id)
    by_delivery: dict[str, list[Any]] = {}
    for row in attempts:
        by_delivery.setdefault(row.delivery_id, []).append(row)
    payload = stored.payload.model_dump(mode="json", exclude_none=True)
    return page(
        request,
        who,
        "request.html",
        r=stored,
        attempts=by_delivery,
        payload=yaml.safe_dump(payload, sort_keys=False, allow_unicode=True),
        message=request.query_params.get("message"),
    )


@router.post("/requests/{request_id}/{action}")
async def handoff_action(
    request_id: str, action: str, request: Request, who: CallerDep
) -> Response:
    _, refused = await checked_post(request, who, "agent")
    if refused is not None:
        return refused
    if action not in ("claim", "resolve") or parse_id(request_id) is None:
        return refusal(request, who, 404, "No such action.")
    act = handoff.claim if action == "claim" else handoff.resolve
    try:
        outcome = await act(runtime_of(request), request_id, by=who.name, via="ui")
    except NotFound:
        return refusal(request, who, 404, "No such assistance request.")
    note = "" if outcome.won else f"?message=Already {outcome.state} by someone else"
    return redirect(f"/ui/requests/{parse_id(request_id)}{note}")


# -- dead letters --------------------------------------------------------------------------


def _dead_filter(request: Request, q: dict[str, str]) -> DeliveryFilter:
    return DeliveryFilter(DeliveryStatus.DEAD, q.get("channel"), _since(q.get("since"), request))


@router.get("/dead-letters")
async def dead_letters(request: Request, who: CallerDep) -> Response:
    if (gone := _login_first(request, who)) is not None:
        return gone
    q = clean(dict(request.query_params))
    ledger = DeliveryLedger(runtime_of(request).db)
    where = _dead_filter(request, q)
    items, _ = await ledger.list_deliveries(where, limit=PAGE_SIZE)
    count = await ledger.count(where) if q.get("confirm") else None
    return page(
        request,
        who,
        "dead_letters.html",
        items=items,
        q=q,
        count=count,
        windows=list(WINDOWS),
        channels=sorted(runtime_of(request).channels()),
        message=request.query_params.get("message"),
    )


@router.post("/deliveries/{delivery_id}/retry")
async def retry_one(delivery_id: str, request: Request, who: CallerDep) -> Response:
    _, refused = await checked_post(request, who, "admin")
    if refused is not None:
        return refused
    runtime = runtime_of(request)
    try:
        await runtime.store.queue.retry_dead(delivery_id, runtime.clock.now())
    except NotFound:
        return refusal(request, who, 404, "No such delivery.")
    except InvalidState as exc:
        return redirect(f"/ui/dead-letters?message={exc}")
    runtime.wake_workers()
    return redirect("/ui/dead-letters?message=Retrying 1 delivery")


@router.post("/dead-letters/retry")
async def retry_all(request: Request, who: CallerDep) -> Response:
    form, refused = await checked_post(request, who, "admin")
    if refused is not None:
        return refused
    runtime = runtime_of(request)
    where = _dead_filter(request, clean(form))
    count = await DeliveryLedger(runtime.db).retry_matching(where, runtime.clock.now())
    runtime.wake_workers()
    return redirect(f"/ui/dead-letters?message=Retrying {count} deliveries")


# -- channels ------------------------------------------------------------------------------


def _breaker(request: Request, name: str) -> str:
    workers = runtime_of(request).workers
    breaker = workers.circuits.get(name) if workers is not None else None
    return "unknown (no workers here)" if workers is None else (
        "closed" if breaker is None else breaker.state.value.replace("_", "-")
    )  # fmt: skip


@router.get("/channels")
async def channels_page(request: Request, who: CallerDep) -> Response:
    if (gone := _login_first(request, who)) is not None:
        return gone
    items = [
        {
            "name": name,
            "type": settings.type,
            "settings": settings.model_dump(mode="json", by_alias=True, exclude={"type"}),
            "breaker": _breaker(request, name),
        }
        for name, (_, settings) in sorted(runtime_of(request).channels().items())
    ]
    return page(request, who, "channels.html", items=items)


@router.post("/channels/{name}/test")
async def channel_test(name: str, request: Request, who: CallerDep) -> Response:
    """A test send; answers the result fragment (htmx swaps it in next to the button)."""
    _, refused = await checked_post(request, who, "admin")
    if refused is not None:
        return refused
    runtime = runtime_of(request)
    entry = runtime.channels().get(name)
    if entry is None:
        return refusal(request, who, 404, "No such channel.")
    result = await send_sample(name, entry[0], entry[1], runtime.clock.now())
    return page(request, who, "_test_result.html", result=result)


# -- routing config ------------------------------------------------------------------------


def _yaml(document: dict[str, Any] | None) -> str:
    if document is None:
        return ""
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True)


@router.get("/config")
async def config_page(request: Request, who: CallerDep) -> Response:
    if (gone := _login_first(request, who)) is not None:
        return gone
    return await _config_page(request, who)


async def _config_page(
    request: Request,
    who: Caller,
    *,
    draft: str | None = None,
    problems: list[dict[str, str]] | None = None,
    valid: bool = False,
    status: int = 200,
) -> Response:
    runtime = runtime_of(request)
    store = runtime.store.config
    active = await store.active()
    versions = await store.list()
    text = _yaml(redacted(active.document, runtime.registry)) if active else ""
    diff = None
    q = clean(dict(request.query_params))
    a, b = q.get("a", ""), q.get("b", "")
    if a.isdigit() and b.isdigit():
        old, new = await store.get(int(a)), await store.get(int(b))
        if old is not None and new is not None:
            diff = list(
                difflib.unified_diff(
                    _yaml(redacted(old.document, runtime.registry)).splitlines(),
                    _yaml(redacted(new.document, runtime.registry)).splitlines(),
                    f"version {a}",
                    f"version {b}",
                    lineterm="",
                )
            )
    return page(
        request,
        who,
        "config.html",
        status,
        active=active,
        versions=versions,
        draft=text if draft is None else draft,
        problems=problems,
        valid=valid,
        diff=diff,
        q=q,
        message=request.query_params.get("message"),
    )


@router.post("/config")
async def config_draft(request: Request, who: CallerDep) -> Response:
    """The draft: `action=validate` checks it; `action=activate` stores it as a new version,
    active at once. Problems are listed by key either way."""
    form, refused = await checked_post(request, who, "admin")
    if refused is not None:
        return refused
    draft = form.get("document", "")
    runtime = runtime_of(request)
    writer = ConfigWriter(runtime)
    try:
        document = document_from_text(draft, "application/yaml")
        if form.get("action") == "activate":
            await writer.write(document, author=who.name, expected=None, origin="ui")
            return redirect("/ui/config?message=Activated a new version")
        active = await runtime.store.config.active()
        writer.check(document, active.document if active else None)
    except ConfigError as exc:
        problems = [{"key": k, "why": w} for k, w in (exc.problems or [("(config)", str(exc))])]
        return await _config_page(request, who, draft=draft, problems=problems, status=422)
    except ApiError as exc:
        details = exc.details if isinstance(exc.details, list) else []
        problems = [d for d in details if isinstance(d, dict)] or [
            {"key": "(config)", "why": exc.message}
        ]
        return await _config_page(request, who, draft=draft, problems=problems, status=422)
    return await _config_page(request, who, draft=draft, valid=True)


@router.post("/config/versions/{number}/activate")
async def config_rollback(number: int, request: Request, who: CallerDep) -> Response:
    _, refused = await checked_post(request, who, "admin")
    if refused is not None:
        return refused
    runtime = runtime_of(request)
    store = runtime.store.config
    target = await store.get(number)
    if target is None:
        return refusal(request, who, 404, "No such config version.")
    writer = ConfigWriter(runtime)
    try:
        writer.check_stored(target.document)
        version = await store.activate(number, author=who.name, expected=None)
    except ApiError as exc:
        return await _config_page(request, who, problems=exc.details or [], status=422)
    await writer.apply()
    return redirect(f"/ui/config?message=Version {number} is active again as {version.number}")


# -- API keys ------------------------------------------------------------------------------


async def _keys_page(request: Request, who: Caller, **extra: Any) -> Response:
    keys = await runtime_of(request).store.keys.list()
    scopes = [s.value for s in Scope]
    return page(request, who, "keys.html", keys=keys, scopes=scopes, **extra)


@router.get("/keys")
async def keys_page(request: Request, who: CallerDep) -> Response:
    if (gone := _login_first(request, who)) is not None:
        return gone
    if not who.can("admin"):
        return refusal(request, who, 403, "API keys need the admin scope.")
    return await _keys_page(request, who, created=None, error=None)


@router.post("/keys")
async def key_create(request: Request, who: CallerDep) -> Response:
    form, refused = await checked_post(request, who, "admin")
    if refused is not None:
        return refused
    name = form.get("name", "").strip()
    scope = _enum(Scope, form.get("scope"))
    if not name or scope is None or len(name) > 64 or any(ord(c) < 32 for c in name):
        return await _keys_page(request, who, created=None, error="A name and a scope, please.")
    runtime = runtime_of(request)
    try:
        record, plain = await runtime.store.keys.create(scope, runtime.clock.now(), name)
    except InvalidState as exc:
        return await _keys_page(request, who, created=None, error=str(exc))
    return await _keys_page(request, who, created={"name": record.name, "key": plain}, error=None)


@router.post("/keys/{key_id}/revoke")
async def key_revoke(key_id: str, request: Request, who: CallerDep) -> Response:
    _, refused = await checked_post(request, who, "admin")
    if refused is not None:
        return refused
    runtime = runtime_of(request)
    stored = parse_id(key_id)
    if stored is None:
        return refusal(request, who, 404, "No such key.")
    try:
        await runtime.store.keys.revoke(stored, runtime.clock.now(), id_only=True)
    except NotFound:
        return refusal(request, who, 404, "No such key.")
    return redirect("/ui/keys")
