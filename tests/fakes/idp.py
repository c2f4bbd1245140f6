"""A local OIDC identity provider: a real HTTP server with a discovery document and a JWKS of
keys the test generates (RSA, EC, Ed25519), and tokens signed with them.

    with FakeIdP() as idp:
        kid = idp.add_key("RSA")
        token = idp.token(sub="bot-1", scope="request-assistance")
        ...                                   # DESKBELL_OIDC_ISSUER=idp.issuer
        new = idp.rotate("EC")                # a new key published, the old ones withdrawn
        idp.stop()                            # the JWKS is unreachable from now on

API
- `issuer` (`http://127.0.0.1:port/realm`), `jwks_url`, `audience` (default "deskbell-api").
- `add_key(kty="RSA"|"EC"|"OKP", kid=None, publish=True)` -> kid; `rotate(kty)` -> new kid
  (the others unpublished but still able to sign); `publish(kid)` / `unpublish(kid)`.
- `token(kid=None, alg=None, **claims)`: signed with `kid` (default: the newest key);
  iss, aud, sub, iat, nbf and exp (+300 s) filled in unless given (None leaves a claim out).
- `forge(header, claims, signature)`: a token with any header and signature (alg none,
  HS256 keyed with a public key, ...): `b64url(json)` parts, for attacks.
- `public_pem(kid)`; `cache_control` (the header the JWKS answers with);
  `jwks_fetches` / `discovery_fetches` (counts).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from tests.fakes.served import ServedInThread

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
DEFAULT_ALG = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(kid: str, key: PrivateKey) -> dict[str, Any]:
    public = key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        jwk = json.loads(RSAAlgorithm.to_jwk(public))
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = json.loads(ECAlgorithm.to_jwk(public))
    else:
        jwk = json.loads(OKPAlgorithm.to_jwk(public))
    return {**jwk, "kid": kid, "use": "sig"}


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        idp = self.server.idp
        status, body, headers = idp._answer(self.path)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], idp: FakeIdP) -> None:
        self.idp = idp
        super().__init__(address, _Handler)


class FakeIdP(ServedInThread):
    def __init__(self, audience: str = "deskbell-api", realm: str = "/realm") -> None:
        self.audience = audience
        self.realm = realm
        self.port = 0
        self.cache_control: str | None = "public, max-age=600"
        self.jwks_fetches = 0
        self.discovery_fetches = 0
        self._lock = threading.Lock()
        self._keys: dict[str, PrivateKey] = {}
        self._published: list[str] = []

    def _bind(self) -> _Server:
        return _Server(("127.0.0.1", self.port), self)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.realm}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    def _answer(self, path: str) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            if path == f"{self.realm}/.well-known/openid-configuration":
                self.discovery_fetches += 1
                return 200, {"issuer": self.issuer, "jwks_uri": self.jwks_url}, {}
            if path == self.jwks_url.removeprefix(f"http://127.0.0.1:{self.port}"):
                self.jwks_fetches += 1
                keys = [_jwk(kid, self._keys[kid]) for kid in self._published]
                headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
                return 200, {"keys": keys}, headers
        return 404, {"error": "not found"}, {}

    # --- keys ---------------------------------------------------------------------------
    def add_key(self, kty: str = "RSA", kid: str | None = None, *, publish: bool = True) -> str:
        key: PrivateKey
        if kty == "RSA":
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kty == "EC":
            key = ec.generate_private_key(ec.SECP256R1())
        else:
            key = ed25519.Ed25519PrivateKey.generate()
        with self._lock:
            kid = kid or f"{kty.lower()}-{len(self._keys) + 1}"
            self._keys[kid] = key
            if publish:
                self._published.append(kid)
        return kid

    def rotate(self, kty: str = "RSA") -> str:
        """A new key published in place of every other (which can still sign: old tokens)."""
        kid = self.add_key(kty, publish=False)
        with self._lock:
            self._published = [kid]
        return kid

    def publish(self, kid: str) -> None:
        with self._lock:
            if kid not in self._published:
                self._published.append(kid)

    def unpublish(self, kid: str) -> None:
        with self._lock:
            self._published.remove(kid)

    def public_pem(self, kid: str) -> bytes:
        return (
            self._keys[kid]
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    # --- tokens -------------------------------------------------------------------------
    def claims(self, **claims: Any) -> dict[str, Any]:
        now = int(time.time())
        base: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "bot-1",
            "iat": now,
            "nbf": now,
            "exp": now + 300,
        }
        base.update(claims)
        return {k: v for k, v in base.items() if v is not None}

    def token(self, kid: str | None = None, alg: str | None = None, **claims: Any) -> str:
        kid = kid or list(self._keys)[-1]
        key = self._keys[kid]
        kty = "RSA" if isinstance(key, rsa.RSAPrivateKey) else "EC"
        if isinstance(key, ed25519.Ed25519PrivateKey):
            kty = "OKP"
        return jwt.encode(
            self.claims(**claims), key, algorithm=alg or DEFAULT_ALG[kty], headers={"kid": kid}
        )

    def forge(self, header: dict[str, Any], claims: dict[str, Any], signature: bytes) -> str:
        head = b64url(json.dumps(header).encode())
        body = b64url(json.dumps(claims).encode())
        return f"{head}.{body}.{b64url(signature)}"
