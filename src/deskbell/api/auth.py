"""Who is calling, and may they: API keys and OIDC tokens (`Authorization: Bearer`), signed
webhooks, scopes, and the per-caller rate limit (SPEC §3).

Routers get auth where app.py includes them, so a new router is covered the moment it is
included:

    app.include_router(router, dependencies=[Depends(require_scope("admin"))])
    app.include_router(router, dependencies=[Depends(read_or_admin)])  # GET: read, else admin

A route that needs the caller itself asks for `principal: PrincipalDep` (computed once per
request however many dependencies use it).

Auth is off only while nothing is configured: no key in DESKBELL_API_KEYS or the database, no
webhook secret, no OIDC issuer. The CLI then binds 127.0.0.1 only. The decision fails closed:
once a process has seen any credential configured it requires credentials until it stops, even
if every key is later revoked, so revoking keys can never open a public server.
"""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal, NamedTuple, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError, OperationalError
from standardwebhooks import Webhook

from deskbell.api.errors import ApiError
from deskbell.api.incoming import Incoming
from deskbell.api.jwks import JwksUnavailable
from deskbell.api.limits import RateLimiter, read_body
from deskbell.api.oidc import (
    MAX_TOKEN_CHARS,
    NoGrantedScope,
    TokenRejected,
    TokenVerifier,
    looks_like_jwt,
    oidc_settings,
)
from deskbell.api.webhooks import SignatureError, Verifier, is_signed, parse_secrets, verify
from deskbell.errors import ConfigError
from deskbell.models import Scope
from deskbell.storage.keys import hash_key
from deskbell.wiring import Runtime

MIN_KEY_CHARS = 32
MAX_AUTHORIZATION_CHARS = 512
PROBE_EVERY = 1.0  # seconds between "has a key been created?" checks while auth is off
_BEARER = HTTPBearer(
    auto_error=False,
    description="An API key from `deskbell apikey create` or DESKBELL_API_KEYS, or an "
    "access token of the OIDC issuer (DESKBELL_OIDC_ISSUER).",
)
ALL_SCOPES = frozenset(Scope)


class Principal(NamedTuple):
    """Who is calling. A NamedTuple, cheap to build: one is built for every request with a
    key, token or signature (the anonymous one is cached, `_anonymous`). `name` is who, for
    everything that records it: a key's name, a token's subject (or DESKBELL_OIDC_NAME_CLAIM),
    a webhook source's name."""

    kind: Literal["key", "token", "webhook", "anonymous"]
    name: str
    scopes: frozenset[Scope]
    webhook_id: str | None = None

    @property
    def bucket(self) -> str:
        return f"{self.kind}:{self.name}"


@functools.lru_cache(maxsize=256)
def _anonymous(host: str) -> Principal:
    """The caller when auth is off, by client address: the same few on every request."""
    return Principal("anonymous", host, ALL_SCOPES)


@dataclass(frozen=True)
class EnvKey:
    name: str
    key_hash: str
    scope: Scope


def parse_env_keys(text: str) -> list[EnvKey]:
    """DESKBELL_API_KEYS: comma-separated `key:scope`. Errors name the position, never the key."""
    found = []
    for position, item in enumerate(p.strip() for p in text.split(",")):
        if not item:
            continue
        key, _, scope = item.rpartition(":")
        where = f"DESKBELL_API_KEYS item {position + 1}"
        if scope not in {s.value for s in Scope}:
            raise ConfigError(
                f"{where}: must be key:scope with scope one of {', '.join(s.value for s in Scope)}"
            )
        if looks_like_jwt(key):
            raise ConfigError(f"{where}: a key must not have the shape of a JWT (eyJ...)")
        if len(key) < MIN_KEY_CHARS or len(key) > MAX_AUTHORIZATION_CHARS - 7:
            raise ConfigError(
                f"{where}: a key needs at least {MIN_KEY_CHARS} random characters "
                "(try `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        found.append(EnvKey(f"env-{position + 1}", hash_key(key), Scope(scope)))
    return found


class Authenticator:
    """Per-app auth state: env keys and secrets parsed once, keys read from the database on
    every request (so a revoke holds at once on every node), one rate limiter."""

    def __init__(self, runtime: Runtime, *, now: Callable[[], float] = time.monotonic) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.keys = runtime.store.keys
        self.env_keys = parse_env_keys(settings.api_keys.get_secret_value())
        self.env_secrets = parse_secrets(settings.webhook_secrets.get_secret_value())
        self.limiter = RateLimiter(settings.rate_limit, settings.rate_burst, now=now)
        oidc = oidc_settings(settings)
        self.tokens = TokenVerifier(oidc) if oidc is not None else None
        self.required = bool(self.env_keys or self.env_secrets or self.tokens)
        self._now = now
        self._next_probe = 0.0

    def verifiers(self) -> list[Verifier]:
        """Env secrets plus the active config's `sources:` (which a reload may change)."""
        from_config = [
            Verifier(name, Webhook(secret.get_secret_value()))
            for name, source in self.runtime.active.config.sources.items()
            for secret in source.secrets
        ]
        return [*self.env_secrets, *from_config]

    def _known_open(self) -> bool:
        """Auth is off as far as a recent look says: no keys, no sources, no probe due. Asked
        first so that an unauthenticated request usually needs no `auth_required` coroutine."""
        return (
            not self.required
            and self._now() < self._next_probe
            and not self.runtime.active.config.sources
        )

    async def auth_required(self) -> bool:
        if self.required:
            return True
        if self.runtime.active.config.sources:
            self.required = True
        elif self._now() >= self._next_probe:
            # Set before the await: the requests arriving while this probe runs must not each
            # start their own (under load that was one query per request for a moment).
            self._next_probe = self._now() + PROBE_EVERY
            try:
                self.required = await self.keys.any_active()
            except (OperationalError, DBAPIError, OSError) as exc:
                self._next_probe = 0.0
                raise ApiError(503, "database_unavailable", "cannot check API keys") from exc
        return self.required

    async def authenticate(self, request: Incoming) -> Principal:
        header = request.headers.get("authorization")
        if header is not None:
            principal = await self._by_key(header)
        elif is_signed(request.headers):
            principal = await self._by_signature(request)
        elif not self._known_open() and await self.auth_required():
            raise _unauthorized(
                "missing_credentials",
                "an API key, a bearer token or a webhook signature is needed"
                if self.tokens is not None
                else "an API key or a webhook signature is needed",
            )
        else:
            client = request.scope.get("client")  # what request.client wraps, per call
            principal = _anonymous(client[0] if client else "local")
        if principal.kind != "anonymous":
            # Per key (SPEC: "a per-key rate limit"); with auth off the server is loopback-only.
            self.limiter.check(principal.bucket)
        return principal

    async def _by_key(self, header: str) -> Principal:
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if looks_like_jwt(key) and scheme.lower() == "bearer":
            return await self._by_token(key)
        if scheme.lower() != "bearer" or not key or len(header) > MAX_AUTHORIZATION_CHARS:
            raise _unauthorized("invalid_credentials", "Authorization must be 'Bearer <key>'")
        wanted = hash_key(key)
        # Every env key is compared, in constant time, whichever matches.
        matches = [k for k in self.env_keys if hmac.compare_digest(k.key_hash, wanted)]
        if matches:
            return Principal("key", matches[0].name, matches[0].scope.grants())
        try:
            found = await self.keys.find_active(key)
            if found is not None:
                await self.keys.touch(found, self.runtime.clock.now())
        except (OperationalError, DBAPIError, OSError) as exc:
            raise ApiError(503, "database_unavailable", "cannot check the API key") from exc
        if found is None:
            raise _unauthorized("invalid_credentials", "unknown or revoked API key")
        return Principal("key", found.name, found.scope.grants())

    async def _by_token(self, token: str) -> Principal:
        """An OIDC access token (api/oidc.py): 401 invalid_token, 403 insufficient_scope, or
        503 oidc_unavailable while the issuer's keys cannot be had."""
        if self.tokens is None:
            raise _unauthorized(
                "invalid_credentials", "bearer tokens (JWT) are not accepted: OIDC is not set up"
            )
        if len(token) > MAX_TOKEN_CHARS:
            raise _invalid_token(f"the token is longer than {MAX_TOKEN_CHARS} characters")
        try:
            name, scopes = await self.tokens.verify(token)
        except TokenRejected as exc:
            raise _invalid_token(exc.message) from None
        except NoGrantedScope as exc:
            raise ApiError(
                403,
                "insufficient_scope",
                "the token carries none of the scopes this service accepts",
                {"accepted": sorted(self.tokens.config.scopes), "token_scopes": exc.held},
                headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
            ) from None
        except JwksUnavailable as exc:
            raise ApiError(
                503,
                "oidc_unavailable",
                f"cannot verify bearer tokens now: {exc}; API keys still work",
                headers={"Retry-After": "60"},
            ) from None
        return Principal("token", name, scopes)

    async def _by_signature(self, request: Incoming) -> Principal:
        body = await read_body(request, self.runtime.settings.max_body_bytes)
        try:
            signed = verify(body, request.headers, self.verifiers(), self.runtime.clock.now())
        except SignatureError as exc:
            raise _unauthorized(exc.code, exc.message) from None
        return Principal("webhook", signed.source, frozenset({Scope.INGEST}), signed.webhook_id)


def _unauthorized(code: str, message: str) -> ApiError:
    return ApiError(401, code, message, headers={"WWW-Authenticate": "Bearer"})


def _invalid_token(message: str) -> ApiError:
    return ApiError(401, "invalid_token", message, headers={"WWW-Authenticate": _INVALID_TOKEN})


_INVALID_TOKEN = 'Bearer error="invalid_token"'  # noqa: S105 - RFC 6750's error, no secret


def get_authenticator(request: Request) -> Authenticator:
    return cast("Authenticator", request.app.state.authenticator)


async def authenticate(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> Principal:
    """The caller, or 401/429. `_bearer` is there so OpenAPI documents the scheme."""
    return await get_authenticator(request).authenticate(request)


PrincipalDep = Annotated[Principal, Depends(authenticate)]


def _insufficient(needed: Scope, principal: Principal) -> ApiError:
    return ApiError(
        403,
        "insufficient_scope",
        f"this needs the {needed.value} scope",
        {"required": needed.value, "granted": sorted(s.value for s in principal.scopes)},
    )


def check_scope(principal: Principal, needed: Scope) -> Principal:
    """The caller, if it holds `needed` (admin implies read); else 403."""
    if needed not in principal.scopes:
        raise _insufficient(needed, principal)
    return principal


def require_scope(scope: Scope | str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets through only callers holding `scope` (admin implies read)."""
    needed = Scope(scope)

    async def check(principal: PrincipalDep) -> Principal:
        return check_scope(principal, needed)

    return check


async def read_or_admin(request: Request, principal: PrincipalDep) -> Principal:
    """SPEC §3 for a mixed router: reading (GET, HEAD) needs `read`, anything else `admin`."""
    needed = Scope.READ if request.method in ("GET", "HEAD") else Scope.ADMIN
    if needed not in principal.scopes:
        raise _insufficient(needed, principal)
    return principal
