"""The dashboard's session: one signed cookie (itsdangerous, keyed by DESKBELL_SECRET_KEY) that
holds who logged in, their scopes and the CSRF token of every form.

A visitor gets a cookie with a CSRF token before logging in (so the login form is protected
too). Logging in verifies the pasted API key or OIDC token with the API's own `Authenticator`
and writes its principal into the cookie; the cookie expires after `SESSION_SECONDS`. Without
a secret key each process signs with a random key of its own: sessions then end when the
process restarts, and with `serve --processes N` a secret key is needed (docs/dashboard.md).

The cookie is HttpOnly, SameSite=Lax, and Secure when the request came over https.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from deskbell.models import Scope

COOKIE = "deskbell_ui"
SESSION_SECONDS = 8 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    name: str | None = None  # None: not logged in
    kind: str | None = None  # key, token or anonymous
    scopes: frozenset[Scope] = frozenset()

    @property
    def logged_in(self) -> bool:
        return self.name is not None

    def can(self, scope: str) -> bool:
        return Scope(scope) in self.scopes


class Sessions:
    """Reads and writes the cookie; one per app."""

    def __init__(self, secret_key: str) -> None:
        self.ephemeral = not secret_key
        key = secret_key or secrets.token_urlsafe(32)
        self.serializer = URLSafeTimedSerializer(key, salt="deskbell-ui-session")

    def read(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self.serializer.loads(raw, max_age=SESSION_SECONDS)
        except BadSignature:  # SignatureExpired is one too
            return None
        if not isinstance(data, dict) or not isinstance(data.get("csrf"), str):
            return None
        try:
            scopes = frozenset(Scope(s) for s in data.get("scopes", []))
        except ValueError:
            return None
        return Session(data["csrf"], data.get("name"), data.get("kind"), scopes)

    @staticmethod
    def fresh() -> Session:
        return Session(csrf=secrets.token_urlsafe(24))

    def write(self, request: Request, response: Response, session: Session) -> None:
        value = self.serializer.dumps(
            {
                "csrf": session.csrf,
                "name": session.name,
                "kind": session.kind,
                "scopes": sorted(s.value for s in session.scopes),
            }
        )
        response.set_cookie(
            COOKIE,
            value,
            max_age=SESSION_SECONDS,
            path="/ui",
            httponly=True,
            samesite="lax",
            secure=_is_https(request),
        )


def _is_https(request: Request) -> bool:
    if request.url.scheme == "https":
        return True
    forwarded = request.headers.get("x-forwarded-proto", "")
    return forwarded.split(",")[0].strip().lower() == "https"


def csrf_ok(session: Session | None, sent: str | None) -> bool:
    """The token sent (form field or header) is the session's, compared in constant time."""
    if session is None or not sent:
        return False
    return hmac.compare_digest(session.csrf.encode(), sent.encode())
