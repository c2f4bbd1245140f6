"""`/claim/{token}`: the page an email's claim link opens (SPEC §9, api/claim_links.py).

GET shows the request (topic and description, escaped) and a form: a name and a Claim button.
It never claims: mail scanners and link previews follow links. Only the form's POST claims,
with the page's CSRF token (signed, bound to this link) and the name typed in; the claim goes
through the handoff service with `via: email`. A link is good once: once the request is no
longer waiting, GET and POST both answer who has it (409). An expired link is 410, an altered
or foreign one 400, a request that no longer exists 404, a POST without the page's token 403;
each as a short HTML page (people read these, not programs).

The token sits in the URL, so the pages are never cached, never framed and send no Referer;
they load nothing from elsewhere (a strict Content-Security-Policy).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jinja2
import structlog
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from deskbell import handoff
from deskbell.api.claim_links import ClaimLink, ClaimLinks, LinkRefused
from deskbell.api.deps import RuntimeDep
from deskbell.api.errors import ApiError
from deskbell.api.limits import read_body
from deskbell.errors import NotFound
from deskbell.models import HandoffState, StoredRequest
from deskbell.wiring import Runtime

router = APIRouter(tags=["handoff"], include_in_schema=False)
log = structlog.get_logger(__name__)

PATH = "/claim/{token}"
MAX_FORM_BYTES = 4096
MAX_TOKEN_CHARS = 512
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}


@functools.cache
def _templates() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(Path(__file__).parents[1] / "templates")
    return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)


def page(status: int, title: str, message: str = "", **values: Any) -> HTMLResponse:
    context = {
        "title": title,
        "message": message,
        "problem": status >= 400,
        "request": None,
        "form": False,
        "csrf": "",
        "name": "",
        **values,
    }
    html = _templates().get_template("claim.html").render(context)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


@router.get(PATH, response_class=HTMLResponse)
async def claim_form(token: str, runtime: RuntimeDep) -> HTMLResponse:
    """The request and a form to claim it; claims nothing."""
    found = await _waiting_request(runtime, token)
    if isinstance(found, HTMLResponse):
        return found
    links, _, stored = found
    return page(
        200,
        "Claim this request",
        request=stored.payload,
        form=True,
        csrf=links.csrf_token(token),
    )


@router.post(PATH, response_class=HTMLResponse)
async def claim(token: str, request: Request, runtime: RuntimeDep) -> HTMLResponse:
    """The form's POST: claims the request for the name given, via email."""
    try:
        body = await read_body(request, MAX_FORM_BYTES)
    except ApiError as exc:
        return page(exc.status, "Cannot claim", exc.message)
    try:
        form = parse_qs(body.decode("utf-8"), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return page(400, "Cannot claim", "The form could not be read.")
    csrf = _one(form, "csrf")
    links = ClaimLinks.from_settings(runtime.settings, runtime.clock)
    if links is None or not links.csrf_ok(token, csrf):
        return page(403, "Cannot claim", "Open the link from the email again and use its form.")
    found = await _waiting_request(runtime, token)
    if isinstance(found, HTMLResponse):
        return found
    _, link, stored = found
    name = _one(form, "name") or ""
    try:
        name = handoff.clean_name(name)
    except ValueError as exc:
        return page(
            400,
            "Claim this request",
            f"Your name {exc}.",
            request=stored.payload,
            form=True,
            csrf=csrf,
            name=name[:128],
        )
    try:
        outcome = await handoff.claim(runtime, link.request_id, by=name, via="email")
    except NotFound:
        return page(404, "Unknown request", "This request no longer exists.")
    log.info("email_claim", request_id=link.request_id, won=outcome.won, state=outcome.state)
    if not outcome.won:
        return page(409, "Already taken", _taken(outcome.claimed_by, outcome.resolved_by))
    claimed = f"You ({name}) have claimed this request."
    return page(200, "It is yours", claimed, request=stored.payload)


async def _waiting_request(
    runtime: Runtime, token: str
) -> HTMLResponse | tuple[ClaimLinks, ClaimLink, StoredRequest]:
    """The link's request while it waits; else the page that says why not."""
    links = ClaimLinks.from_settings(runtime.settings, runtime.clock)
    if links is None:
        return page(404, "Claim links are off", "This server does not issue claim links.")
    try:
        if len(token) > MAX_TOKEN_CHARS:
            raise LinkRefused("this is not a valid claim link")
        link = links.read(token)
    except LinkRefused as exc:
        title = "Link expired" if exc.expired else "Invalid link"
        return page(410 if exc.expired else 400, title, str(exc).capitalize() + ".")
    stored = await runtime.store.reads.get_request(link.request_id)
    if stored is None:
        return page(404, "Unknown request", "This request no longer exists.")
    state = stored.handoff
    if state is not None and state.state is not HandoffState.WAITING:
        return page(409, "Already taken", _taken(state.claimed_by, state.resolved_by))
    return links, link, stored


def _taken(claimed_by: str | None, resolved_by: str | None) -> str:
    if resolved_by:
        return f"This request was already resolved by {resolved_by}."
    return f"This request was already claimed by {claimed_by or 'someone'}."


def _one(form: dict[str, list[str]], key: str) -> str | None:
    values = form.get(key)
    return values[0] if values and len(values) == 1 else None
