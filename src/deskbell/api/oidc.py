"""OIDC / JWT bearer tokens beside API keys (SPEC §3): which bearer credential is a token,
what the settings say, and turning a verified token into the caller's name and scopes.

On when DESKBELL_OIDC_ISSUER and DESKBELL_OIDC_AUDIENCE are both set; one without the other
refuses to start. Verification is PyJWT's (signature, `exp`, `nbf`, `iat`, `iss`, `aud`, with
LEEWAY), with keys from api/jwks.py. Only asymmetric algorithms are accepted, checked on the
header before any key is looked up, so `none` and HS* (the algorithm confusion attack: HS256
keyed with the public key) never reach a verifier.

A token and an API key never meet: a compact JWS is three base64url parts whose first starts
`eyJ` (`{"` encoded); a database key (`dbk_` + base64url) has no dot, and an env key of that
shape is refused at start (auth.parse_env_keys). So a key never reaches the JWT parser and a
token never a hash lookup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
import structlog
from jwt.exceptions import InvalidTokenError, PyJWKError

from deskbell.api.jwks import JwksCache
from deskbell.errors import ConfigError
from deskbell.models import Scope
from deskbell.settings import Settings

log = structlog.get_logger(__name__)

LEEWAY = 60  # seconds, for exp, nbf and iat
MAX_TOKEN_CHARS = 8192  # well under the 16 KiB head limit; real access tokens are 1-3 KiB
MAX_NAME_CHARS = 256
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA")
_JWS_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")


def looks_like_jwt(credential: str) -> bool:
    """A compact JWS: `eyJ...` `.` payload `.` signature, base64url. Cheap for a key (no
    dot: one scan of a short string)."""
    return "." in credential and _JWS_SHAPE.fullmatch(credential) is not None


class TokenRejected(Exception):
    """A token that is not accepted; `message` says why in words safe to send back."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NoGrantedScope(Exception):
    """A valid token carrying none of the mapped scopes (403 insufficient_scope)."""

    def __init__(self, held: list[str]) -> None:
        super().__init__("the token carries none of the scopes DESKBELL_OIDC_SCOPES maps")
        self.held = held


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    audience: str
    jwks_url: str | None
    scopes: Mapping[str, frozenset[Scope]]  # a scope in the token -> what it grants here
    name_claim: str


def parse_scope_map(text: str) -> dict[str, frozenset[Scope]]:
    """`claim-scope:deskbell-scope,...`; the claim scope may itself hold colons
    (`read:messages:read`), so the deskbell scope is what follows the last one."""
    found: dict[str, frozenset[Scope]] = {}
    known = ", ".join(s.value for s in Scope)
    for position, item in enumerate(p.strip() for p in text.split(",")):
        if not item:
            continue
        claim, _, scope = item.rpartition(":")
        if not claim or scope not in {s.value for s in Scope}:
            raise ConfigError(
                f"DESKBELL_OIDC_SCOPES item {position + 1} ({item!r}): must be "
                f"token-scope:deskbell-scope with deskbell-scope one of {known}"
            )
        found[claim] = found.get(claim, frozenset()) | Scope(scope).grants()
    return found


def oidc_settings(settings: Settings) -> OidcSettings | None:
    """The OIDC settings, None when off; a ConfigError (one line) when half-set or invalid."""
    issuer, audience = settings.oidc_issuer or "", settings.oidc_audience or ""
    extras = settings.oidc_jwks_url or settings.oidc_scopes.strip()
    if not issuer and not audience:
        if extras:
            raise ConfigError(
                "DESKBELL_OIDC_JWKS_URL or DESKBELL_OIDC_SCOPES is set without "
                "DESKBELL_OIDC_ISSUER and DESKBELL_OIDC_AUDIENCE: set both to accept tokens"
            )
        return None
    if not issuer or not audience:
        missing = "DESKBELL_OIDC_AUDIENCE" if issuer else "DESKBELL_OIDC_ISSUER"
        raise ConfigError(
            f"{missing} is not set: OIDC tokens need both DESKBELL_OIDC_ISSUER and "
            "DESKBELL_OIDC_AUDIENCE (the API identifier the tokens are issued for)"
        )
    for name, url in (("ISSUER", issuer), ("JWKS_URL", settings.oidc_jwks_url)):
        if url is not None and not _is_http_url(url):
            raise ConfigError(f"DESKBELL_OIDC_{name} must be an http(s) URL, not {url!r}")
    scopes = parse_scope_map(settings.oidc_scopes)
    if not scopes:
        raise ConfigError(
            "DESKBELL_OIDC_SCOPES is empty: map at least one token scope, e.g. "
            "request-assistance:ingest,support-admin:admin"
        )
    if not settings.oidc_name_claim.strip():
        raise ConfigError("DESKBELL_OIDC_NAME_CLAIM is empty: name a claim, e.g. sub")
    return OidcSettings(
        issuer, audience, settings.oidc_jwks_url, scopes, settings.oidc_name_claim.strip()
    )


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("https", "http") and bool(parts.hostname)


def token_scopes(claims: Mapping[str, Any]) -> list[str]:
    """The scopes a token carries: `scope` (space-separated, RFC 8693/9068), `scp` (a list,
    or Entra's space-separated string), `permissions` (Auth0 RBAC)."""
    held: list[str] = []
    for claim in ("scope", "scp", "permissions"):
        value = claims.get(claim)
        if isinstance(value, str):
            held.extend(value.split())
        elif isinstance(value, list):
            held.extend(v for v in value if isinstance(v, str))
    return held


class TokenVerifier:
    """Checks bearer tokens of one issuer; per app, like the Authenticator that holds it."""

    def __init__(self, config: OidcSettings, keys: JwksCache | None = None) -> None:
        self.config = config
        self.keys = keys or JwksCache(config.issuer, config.jwks_url)

    async def verify(self, token: str) -> tuple[str, frozenset[Scope]]:
        """(the caller's name, the scopes granted). Raises TokenRejected (401),
        NoGrantedScope (403) or jwks.JwksUnavailable (503)."""
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRejected(f"the token is longer than {MAX_TOKEN_CHARS} characters")
        try:
            header = jwt.get_unverified_header(token)
        except InvalidTokenError:
            raise TokenRejected("the token's header is not valid JSON") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenRejected(f"tokens signed with {alg!r} are not accepted")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise TokenRejected("the token's kid is not a string")
        try:
            key = await self.keys.key(kid, alg)
        except LookupError as exc:
            raise TokenRejected(f"not signed by the issuer's keys: {exc}") from None
        except PyJWKError as exc:
            raise TokenRejected(f"the issuer's key does not fit the token: {exc}") from None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=LEEWAY,
                options={"require": ["exp", "iss", "aud"], "verify_signature": True},
            )
        except InvalidTokenError as exc:
            raise TokenRejected(_reason(exc)) from None
        name = claims.get(self.config.name_claim)
        if not isinstance(name, str) or not name or len(name) > MAX_NAME_CHARS:
            raise TokenRejected(
                f"the token's {self.config.name_claim!r} claim is missing or not a name"
            )
        held = token_scopes(claims)
        granted = frozenset(s for h in held for s in self.config.scopes.get(h, ()))
        if not granted:
            raise NoGrantedScope(held[:20])
        return name, granted


def _reason(exc: InvalidTokenError) -> str:
    """PyJWT's message for each check names the claim (expired, audience, issuer, ...)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf or iat in the future)"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the token is not for this audience (aud)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the token is from another issuer (iss)"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "the token's signature does not verify"
    return f"invalid token: {text}"
