"""The identity provider's signing keys (JWKS): found through discovery, fetched with a
timeout, cached as its `Cache-Control` says (bounded), refreshed on an unknown `kid` at most
once a minute, and kept through an outage.

Why not PyJWT's `PyJWKClient`: it fetches with blocking `urllib` (on the event loop, or a
thread per request), caches for a fixed lifespan whatever `Cache-Control` says, and once that
lifespan is over an unreachable endpoint raises instead of serving the keys it had, so an
outage of the identity provider longer than the lifespan would refuse every token. It does no
discovery and says nothing a readiness probe could read. PyJWT still parses the keys
(`PyJWK`) and verifies the tokens (api/oidc.py).

States: never fetched (a token waits for the first fetch, single-flight); fresh; expired
(the next token triggers one refresh; on failure the old keys keep working, and the refresh
is tried again at most once a minute); gone (no successful fetch for STALE_FOR after expiry:
the keys are dropped, tokens get 503 and /readyz says so).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson
import structlog
from jwt import PyJWK
from jwt.exceptions import PyJWKError

from deskbell.errors import DeskbellError

log = structlog.get_logger(__name__)

FETCH_TIMEOUT = 5.0  # seconds, connect to last byte
MIN_TTL = 300.0  # 5 min: a Cache-Control of no-cache or 0 still caches this long
MAX_TTL = 86400.0  # 24 h
REFRESH_EVERY = 60.0  # at most one fetch a minute for unknown kids or after a failure
STALE_FOR = 86400.0  # cached keys outlive their expiry by this much while the IdP is down
MAX_BYTES = 512 * 1024
MAX_KEYS = 100
USABLE_KTY = frozenset({"RSA", "EC", "OKP"})  # never "oct": a shared secret is no public key
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


class JwksUnavailable(DeskbellError):
    """No signing keys: never fetched successfully, or gone after a long outage."""


def cache_seconds(cache_control: str | None) -> float:
    """How long a JWKS answer is kept: its max-age, within MIN_TTL..MAX_TTL."""
    match = _MAX_AGE.search(cache_control or "")
    seconds = float(match.group(1)) if match else MIN_TTL
    return min(MAX_TTL, max(MIN_TTL, seconds))


def usable_keys(document: Any) -> dict[str, dict[str, Any]]:
    """The signing keys of a JWKS document by kid: public asymmetric keys only."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    found: dict[str, dict[str, Any]] = {}
    for jwk in document["keys"][:MAX_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("kty") not in USABLE_KTY:
            continue
        if jwk.get("use", "sig") != "sig" or "d" in jwk:  # encryption keys; private parts
            continue
        kid = jwk.get("kid")
        found[kid if isinstance(kid, str) else ""] = jwk
    if not found:
        raise ValueError("the JWKS has no usable signing key (RSA, EC or OKP, use sig)")
    return found


class JwksCache:
    """The keys of one issuer, for one process. `now` is a monotonic clock (seconds)."""

    def __init__(
        self,
        issuer: str,
        jwks_url: str | None = None,
        *,
        now: Callable[[], float] = time.monotonic,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self.issuer = issuer
        self.jwks_url = jwks_url
        self.timeout = timeout
        self._now = now
        self._keys: dict[str, dict[str, Any]] = {}
        self._parsed: dict[tuple[str, str], PyJWK] = {}
        self._expires = 0.0
        self._drop_at = 0.0
        self._next_try = 0.0
        self._lock = asyncio.Lock()
        self._discovered = False
        self.last_error: str | None = None

    def has_keys(self) -> bool:
        """Keys to verify with; drops them once STALE_FOR past their expiry."""
        if self._keys and self._now() >= self._drop_at:
            log.error("oidc_keys_dropped", issuer=self.issuer, error=self.last_error)
            self._keys, self._parsed = {}, {}
        return bool(self._keys)

    async def key(self, kid: str | None, alg: str) -> PyJWK:
        """The key named `kid`, bound to `alg`. Raises JwksUnavailable (no keys at all),
        LookupError (no such kid, even after a refresh) or PyJWKError (key unfit for alg)."""
        missing = not self.has_keys() or (kid or "") not in self._keys
        if missing or self._now() >= self._expires:
            # An expired set is refreshed by one request while the others go on with it; a
            # missing set or kid is waited for (the fetch is bounded by the timeout).
            await self.refresh(wait=missing)
        if not self.has_keys():
            raise JwksUnavailable(self.unavailable_reason())
        jwk = self._pick(kid)
        cached = self._parsed.get((jwk.get("kid", ""), alg))
        if cached is None:
            if jwk.get("alg", alg) != alg:
                raise PyJWKError(f"the key {kid!r} is for {jwk.get('alg')}, not {alg}")
            cached = PyJWK(jwk, algorithm=alg)
            self._parsed[(jwk.get("kid", ""), alg)] = cached
        return cached

    def _pick(self, kid: str | None) -> dict[str, Any]:
        if kid is not None:
            if kid not in self._keys:
                raise LookupError(f"no signing key with kid {kid!r}")
            return self._keys[kid]
        if len(self._keys) != 1:  # without a kid only an unambiguous key will do
            raise LookupError("the token names no kid and the issuer has several keys")
        return next(iter(self._keys.values()))

    def unavailable_reason(self) -> str:
        return (
            f"no signing keys from the identity provider {self.issuer}"
            f" ({self.last_error or 'not fetched yet'})"
        )

    async def refresh(self, *, wait: bool = True) -> None:
        """Fetch the keys unless a fetch began under a minute ago (REFRESH_EVERY). Callers
        share one fetch: with `wait` they wait for a running one, else they go on at once."""
        if self._now() < self._next_try and not self._lock.locked():
            return
        if self._lock.locked() and not wait:
            return
        async with self._lock:
            now = self._now()
            if now < self._next_try:  # fetched (or tried) by whoever held the lock
                return
            self._next_try = now + REFRESH_EVERY
            try:
                async with asyncio.timeout(self.timeout):  # the whole fetch, not each read
                    keys, ttl = await self._fetch()
            except (httpx.HTTPError, ValueError, OSError) as exc:
                if self._discovered:  # the provider may have moved its keys: ask again
                    self.jwks_url, self._discovered = None, False
                self.last_error = _describe(exc, self.timeout)
                log.warning(
                    "oidc_keys_fetch_failed",
                    issuer=self.issuer,
                    error=self.last_error,
                    cached_keys=len(self._keys),
                )
                return
            changed = keys.keys() != self._keys.keys()
            self._keys, self._parsed = keys, {}
            self._expires = self._now() + ttl
            self._drop_at = self._expires + STALE_FOR
            self.last_error = None
            if changed:
                log.info("oidc_keys_loaded", issuer=self.issuer, kids=sorted(keys), ttl=ttl)

    async def readiness(self) -> str | None:
        """None when tokens can be verified; else why not (for /readyz)."""
        if not self.has_keys():
            await self.refresh()
        return None if self.has_keys() else self.unavailable_reason()

    async def _fetch(self) -> tuple[dict[str, dict[str, Any]], float]:
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            url = self.jwks_url or await self._discover(client)
            document, headers = await _get_json(client, url)
            keys = usable_keys(document)
            return keys, cache_seconds(headers.get("cache-control"))

    async def _discover(self, client: httpx.AsyncClient) -> str:
        """The jwks_uri of the issuer's discovery document, which must name the same issuer
        (OpenID Connect Discovery 1.0, 4.3); remembered once found."""
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        document, _ = await _get_json(client, url)
        if not isinstance(document, dict) or document.get("issuer") != self.issuer:
            raise ValueError(f"{url} names another issuer: {document.get('issuer')!r}")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise ValueError(f"{url} has no http(s) jwks_uri")
        self.jwks_url, self._discovered = jwks_uri, True
        return jwks_uri


async def _get_json(client: httpx.AsyncClient, url: str) -> tuple[Any, Mapping[str, str]]:
    async with client.stream("GET", url, headers={"Accept": "application/json"}) as answer:
        if answer.status_code != 200:
            raise ValueError(f"GET {url}: HTTP {answer.status_code}")
        body = bytearray()
        async for chunk in answer.aiter_bytes():
            body += chunk
            if len(body) > MAX_BYTES:
                raise ValueError(f"GET {url}: answer over {MAX_BYTES} bytes")
        try:
            return orjson.loads(body), answer.headers
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"GET {url}: not JSON") from exc


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, httpx.HTTPError):
        url = exc.request.url if isinstance(exc, httpx.RequestError) else ""
        return f"{type(exc).__name__}: {url} {exc}".strip()
    return str(exc)
