"""What every dashboard page shares: the template environment, the session of the caller,
CSRF and scope checks, form bodies, and the security headers of every answer.

Pages call the same services as the API (storage, `deskbell.handoff`, the config writer),
never the API over HTTP. Forms are `application/x-www-form-urlencoded`, read here (no
multipart dependency).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast
from urllib.parse import parse_qs

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from deskbell.api.auth import Authenticator, get_authenticator
from deskbell.api.limits import read_body
from deskbell.models import Scope
from deskbell.ui.session import CSRF_FIELD, CSRF_HEADER, Session, Sessions, csrf_ok
from deskbell.wiring import Runtime

MAX_FORM_BYTES = 1024 * 1024
ALL_SCOPES = frozenset(Scope)

# No inline script or style anywhere: htmx's indicator styles are off (meta htmx-config).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def _iso(value: datetime | None) -> str:
    return "" if value is None else value.isoformat(timespec="seconds")


def make_templates() -> Environment:
    env = Environment(
        loader=PackageLoader("deskbell.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["iso"] = _iso
    return env


class UiState:
    """Per app: templates, sessions; on `app.state.ui`."""

    def __init__(self, runtime: Runtime) -> None:
        self.templates = make_templates()
        self.sessions = Sessions(runtime.settings.secret_key.get_secret_value())


def ui_state(request: Request) -> UiState:
    return cast("UiState", request.app.state.ui)


def runtime_of(request: Request) -> Runtime:
    return cast("Runtime", request.app.state.runtime)


class Caller:
    """The session of this request (a fresh one, not logged in, if it had none) and whether
    auth is on. With auth off (no keys at all, loopback only) everyone holds every scope."""

    def __init__(self, session: Session, is_new: bool, auth_on: bool) -> None:
        self.session = session
        self.is_new = is_new
        self.auth_on = auth_on

    @property
    def logged_in(self) -> bool:
        return self.session.logged_in or not self.auth_on

    @property
    def name(self) -> str:
        return self.session.name or "local"

    def can(self, scope: str) -> bool:
        return not self.auth_on or self.session.can(scope)


async def caller(request: Request) -> Caller:
    authenticator: Authenticator = get_authenticator(request)
    found = ui_state(request).sessions.read(request)
    auth_on = await authenticator.auth_required()
    if found is not None and found.kind == "key" and not await _key_still_active(request, found):
        found = Session(found.csrf)  # the key was revoked: logged out from the next page on
    session = found or Sessions.fresh()
    return Caller(session, found is None, auth_on)


async def _key_still_active(request: Request, session: Session) -> bool:
    """A stored key's session ends with the key: revoking it logs its sessions out (keys from
    DESKBELL_API_KEYS last as long as the process's setting)."""
    authenticator = get_authenticator(request)
    if any(k.name == session.name for k in authenticator.env_keys):
        return True
    keys = await runtime_of(request).store.keys.list()
    return any(k.name == session.name and k.active for k in keys)


def page(
    request: Request,
    who: Caller,
    template: str,
    status: int = 200,
    **context: Any,
) -> Response:
    """A rendered template with the security headers, the session cookie written when new."""
    state = ui_state(request)
    html = state.templates.get_template(template).render(
        who=who,
        csrf=who.session.csrf,
        path=request.url.path,
        ephemeral=state.sessions.ephemeral,
        **context,
    )
    response = HTMLResponse(html, status, headers=SECURITY_HEADERS)
    if who.is_new:
        state.sessions.write(request, response, who.session)
    return response


def redirect(url: str, who: Caller | None = None, request: Request | None = None) -> Response:
    response = RedirectResponse(url, 303, headers=SECURITY_HEADERS)
    if who is not None and request is not None and who.is_new:
        ui_state(request).sessions.write(request, response, who.session)
    return response


def refusal(request: Request, who: Caller, status: int, message: str) -> Response:
    return page(request, who, "refused.html", status, message=message)


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body's fields, first value of each."""
    body = await read_body(request, MAX_FORM_BYTES)
    fields = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


async def checked_post(
    request: Request, who: Caller, scope: str
) -> tuple[dict[str, str], Response | None]:
    """The form of a POST, or the refusal to answer instead: 403 without the session's CSRF
    token (field `csrf_token` or header X-CSRF-Token), 401 when not logged in, 403 without
    `scope`."""
    form = await read_form(request)
    sent = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if who.is_new or not csrf_ok(who.session, sent):
        return form, refusal(request, who, 403, "The form's CSRF token is missing or wrong.")
    if not who.logged_in:
        return form, refusal(request, who, 401, "Log in first.")
    if not who.can(scope):
        return form, refusal(request, who, 403, f"This needs the {scope} scope.")
    return form, None


def clean(values: Mapping[str, str | None]) -> dict[str, str]:
    """Query values given, blanks dropped (a form's empty selects)."""
    return {k: v.strip() for k, v in values.items() if v is not None and v.strip()}
