"""OIDC bearer tokens beside API keys (SPEC §3, issue 18), against a local identity provider
(tests/fakes/idp.py): a valid token per scope and per scope claim, each rejected claim, the
algorithm attacks, rotation with an unknown kid, a JWKS outage, an issuer never reached, and
the caller's name where rate limits and idempotency use it.

Time in the key cache is a test clock (`Mono`), moved instead of slept; token times are real
seconds with margins of a minute or more either side of the 60 s leeway."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from deskbell.api.app import create_app
from deskbell.api.auth import Authenticator, parse_env_keys
from deskbell.api.jwks import MAX_TTL, MIN_TTL, REFRESH_EVERY, STALE_FOR, JwksCache, cache_seconds
from deskbell.api.oidc import looks_like_jwt, oidc_settings, parse_scope_map, token_scopes
from deskbell.errors import ConfigError
from deskbell.models import Scope
from deskbell.settings import Settings
from deskbell.storage.keys import KeyStore
from deskbell.wiring import Runtime
from tests.fakes.idp import FakeIdP
from tests.process import free_port

URL = "/v1/assistance-requests"
GOOD = {"topic": "sales", "description": "Wants a quote"}
KEY = "k" * 40
SCOPES = "request-assistance:ingest,support-admin:admin,support-read:read,read:messages:read"


class Mono:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with FakeIdP() as server:
        server.add_key("RSA")
        yield server


@pytest.fixture
def mono() -> Mono:
    return Mono()


@pytest.fixture
def oidc_runtime(make_runtime: Callable[..., Runtime]) -> Callable[..., Runtime]:
    def make(issuer: str, **settings: Any) -> Runtime:
        values = {
            "api_keys": f"{KEY}:ingest",
            "oidc_issuer": issuer,
            "oidc_audience": "deskbell-api",
            "oidc_scopes": SCOPES,
            **settings,
        }
        return make_runtime(**values)

    return make


@asynccontextmanager
async def app_with_clock(runtime: Runtime, mono: Mono) -> AsyncIterator[httpx.AsyncClient]:
    """The app, its token key cache on the test clock."""
    app = create_app(runtime, start_workers=False)
    authenticator: Authenticator = app.state.authenticator
    assert authenticator.tokens is not None
    old = authenticator.tokens.keys
    authenticator.tokens.keys = JwksCache(old.issuer, old.jwks_url, now=mono)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://deskbell") as client:
            yield client


@pytest.fixture
async def client(
    idp: FakeIdP, oidc_runtime: Callable[..., Runtime], mono: Mono
) -> AsyncIterator[httpx.AsyncClient]:
    async with app_with_clock(oidc_runtime(idp.issuer), mono) as client:
        yield client


def error_of(answer: httpx.Response) -> str:
    return str(answer.json()["error"]["code"])


# --- accepted ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "claims",
    [
        {"scope": "openid request-assistance"},
        {"scp": ["request-assistance"]},
        {"scp": "profile request-assistance"},  # Entra ID: a space-separated string
        {"permissions": ["request-assistance"]},  # Auth0 RBAC
    ],
)
async def test_an_ingest_token_posts_but_does_not_read(
    client: httpx.AsyncClient, idp: FakeIdP, claims: dict[str, Any]
) -> None:
    token = idp.token(**claims)
    answer = await client.post(URL, json=GOOD, headers=bearer(token))
    assert answer.status_code == 202, answer.text
    refused = await client.get("/v1/topics", headers=bearer(token))
    assert refused.status_code == 403
    assert error_of(refused) == "insufficient_scope"


@pytest.mark.parametrize(
    ("scope", "reads", "posts", "admin"),
    [
        ("support-read", True, False, False),
        ("read:messages", True, False, False),  # a claim scope with a colon of its own
        ("support-admin", True, False, True),
        ("support-admin request-assistance", True, True, True),
    ],
)
async def test_each_mapped_scope_grants_its_deskbell_scope(
    client: httpx.AsyncClient, idp: FakeIdP, scope: str, reads: bool, posts: bool, admin: bool
) -> None:
    token = bearer(idp.token(scope=scope))
    read = await client.get("/v1/topics", headers=token)
    post = await client.post(URL, json=GOOD, headers=token)
    keys = await client.get("/v1/api-keys", headers=token)
    assert (read.status_code == 200) is reads, read.text
    assert (post.status_code == 202) is posts, post.text
    assert (keys.status_code == 200) is admin, keys.text


@pytest.mark.parametrize("kty", ["EC", "OKP"])
async def test_ec_and_eddsa_keys_verify(client: httpx.AsyncClient, idp: FakeIdP, kty: str) -> None:
    idp.add_key(kty)  # published beside the RSA key before the first fetch
    answer = await client.post(
        URL, json=GOOD, headers=bearer(idp.token(scope="request-assistance"))
    )
    assert answer.status_code == 202, answer.text


async def test_clock_skew_within_the_leeway_is_accepted(
    client: httpx.AsyncClient, idp: FakeIdP
) -> None:
    now = int(time.time())
    token = idp.token(scope="support-read", exp=now - 30, iat=now + 30, nbf=now + 30)
    assert (await client.get("/v1/topics", headers=bearer(token))).status_code == 200


# --- rejected ---------------------------------------------------------------------------


def _bad_claims(idp: FakeIdP) -> dict[str, dict[str, Any]]:
    now = int(time.time())
    return {
        "wrong audience": {"aud": "another-api"},
        "wrong issuer": {"iss": idp.issuer + "-evil"},
        "expired": {"exp": now - 120, "iat": now - 600, "nbf": now - 600},
        "not yet valid": {"nbf": now + 120},
        "issued in the future": {"iat": now + 120},
        "no exp": {"exp": None},
        "no aud": {"aud": None},
        "no subject": {"sub": None},
    }


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("wrong audience", "audience"),
        ("wrong issuer", "issuer"),
        ("expired", "expired"),
        ("not yet valid", "not valid yet"),
        ("issued in the future", "not valid yet"),
        ("no exp", "exp"),
        ("no aud", "aud"),
        ("no subject", "sub"),
    ],
)
async def test_each_claim_is_checked(
    client: httpx.AsyncClient, idp: FakeIdP, case: str, says: str
) -> None:
    token = idp.token(scope="request-assistance", **_bad_claims(idp)[case])
    answer = await client.post(URL, json=GOOD, headers=bearer(token))
    assert answer.status_code == 401, answer.text
    assert error_of(answer) == "invalid_token"
    assert says in answer.json()["error"]["message"]
    assert answer.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_alg_none_is_refused(client: httpx.AsyncClient, idp: FakeIdP) -> None:
    kid = next(iter(idp._keys))
    claims = idp.claims(scope="support-admin")
    for alg in ("none", "None", "NONE"):
        token = idp.forge({"alg": alg, "typ": "JWT", "kid": kid}, claims, b"")
        answer = await client.get("/v1/topics", headers=bearer(token))
        assert answer.status_code == 401, answer.text
        assert "not accepted" in answer.json()["error"]["message"]


async def test_hs256_keyed_with_the_public_key_is_refused(
    client: httpx.AsyncClient, idp: FakeIdP
) -> None:
    """The algorithm confusion attack: the public key (which anyone can fetch) used as an
    HMAC secret, hoping the verifier takes the header's alg with the issuer's key."""
    kid = next(iter(idp._keys))
    claims = idp.claims(scope="support-admin")
    for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
        head = {"alg": alg, "typ": "JWT", "kid": kid}
        unsigned = idp.forge(head, claims, b"").rsplit(".", 1)[0]
        signature = hmac.new(idp.public_pem(kid), unsigned.encode(), digest).digest()
        token = idp.forge(head, claims, signature)
        answer = await client.get("/v1/topics", headers=bearer(token))
        assert answer.status_code == 401, answer.text
        assert error_of(answer) == "invalid_token"


async def test_a_key_outside_the_jwks_is_refused(client: httpx.AsyncClient, idp: FakeIdP) -> None:
    published = next(iter(idp._keys))
    stranger = idp.add_key("RSA", publish=False)
    own = idp.token(kid=stranger, scope="support-admin")  # its kid is not in the JWKS
    # Signed by the stranger but naming the published kid: the signature does not verify.
    header_with_published_kid = idp.token(kid=published, scope="support-admin").split(".")[0]
    impostor = ".".join([header_with_published_kid, *own.split(".")[1:]])
    for token in (own, impostor):
        answer = await client.get("/v1/topics", headers=bearer(token))
        assert answer.status_code == 401, answer.text
        assert error_of(answer) == "invalid_token"


async def test_a_token_with_no_mapped_scope_is_403(client: httpx.AsyncClient, idp: FakeIdP) -> None:
    for claims in ({"scope": "openid profile"}, {}):
        answer = await client.post(URL, json=GOOD, headers=bearer(idp.token(**claims)))
        assert answer.status_code == 403, answer.text
        assert error_of(answer) == "insufficient_scope"
        assert "request-assistance" in answer.json()["error"]["details"]["accepted"]


async def test_garbage_that_looks_like_a_jwt_is_401(client: httpx.AsyncClient) -> None:
    for token in ("eyJhbGciOi.eyJzdWIiOiJ4In0.sig", "eyJ!.x.y", "eyJ" + "A" * 9000 + ".a.b"):
        answer = await client.get("/v1/topics", headers=bearer(token))
        assert answer.status_code == 401, token[:20]


# --- keys of the issuer: rotation, outage, never reached ----------------------------------


async def test_unknown_kid_then_rotation(
    client: httpx.AsyncClient, idp: FakeIdP, mono: Mono
) -> None:
    old = next(iter(idp._keys))
    read = {"scope": "support-read"}
    assert (await client.get("/v1/topics", headers=bearer(idp.token(**read)))).status_code == 200
    assert idp.jwks_fetches == 1
    new = idp.rotate("EC")
    token = idp.token(kid=new, **read)
    # The kid is unknown; the set was fetched under a minute ago, so no new fetch yet.
    for _ in range(3):
        answer = await client.get("/v1/topics", headers=bearer(token))
        assert answer.status_code == 401
        assert "no signing key" in answer.json()["error"]["message"]
    assert idp.jwks_fetches == 1
    mono.t += REFRESH_EVERY + 1
    assert (await client.get("/v1/topics", headers=bearer(token))).status_code == 200
    assert idp.jwks_fetches == 2
    # The old key was withdrawn: its tokens no longer verify, and cost no fetch either.
    withdrawn = await client.get("/v1/topics", headers=bearer(idp.token(kid=old, **read)))
    assert withdrawn.status_code == 401
    assert idp.jwks_fetches == 2


async def test_keys_follow_cache_control(
    client: httpx.AsyncClient, idp: FakeIdP, mono: Mono
) -> None:
    idp.cache_control = "max-age=3600"
    token = bearer(idp.token(scope="support-read"))
    assert (await client.get("/v1/topics", headers=token)).status_code == 200
    mono.t += 3599
    assert (await client.get("/v1/topics", headers=token)).status_code == 200
    assert idp.jwks_fetches == 1
    mono.t += 2
    assert (await client.get("/v1/topics", headers=token)).status_code == 200
    assert idp.jwks_fetches == 2
    assert idp.discovery_fetches == 1  # the jwks_uri is remembered


async def test_an_outage_keeps_the_cached_keys_until_they_are_gone(
    client: httpx.AsyncClient, idp: FakeIdP, mono: Mono
) -> None:
    token = bearer(idp.token(scope="support-read"))
    assert (await client.get("/v1/topics", headers=token)).status_code == 200
    idp.stop()
    mono.t += 600 + 1  # expired (max-age=600): the refresh fails, the old keys still verify
    assert (await client.get("/v1/topics", headers=token)).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    mono.t += STALE_FOR  # a day of outage later the keys are dropped
    answer = await client.get("/v1/topics", headers=token)
    assert answer.status_code == 503, answer.text
    assert error_of(answer) == "oidc_unavailable"
    assert (await client.get("/v1/topics", headers=bearer(KEY))).status_code == 403  # ingest key
    assert (await client.post(URL, json=GOOD, headers=bearer(KEY))).status_code == 202
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "oidc_keys_unavailable"
    idp.start()  # the same port again: the next try (a minute on) brings the keys back
    mono.t += REFRESH_EVERY + 1
    assert (await client.get("/readyz")).status_code == 200
    assert (await client.get("/v1/topics", headers=token)).status_code == 200


async def test_an_issuer_never_reached_is_503_for_tokens_and_keys_still_work(
    oidc_runtime: Callable[..., Runtime], mono: Mono, idp: FakeIdP
) -> None:
    token = bearer(idp.token(scope="request-assistance"))  # signed, but nobody serves its keys
    nowhere = f"http://127.0.0.1:{free_port()}/realm"
    async with app_with_clock(oidc_runtime(nowhere), mono) as client:
        answer = await client.post(URL, json=GOOD, headers=token)
        assert answer.status_code == 503, answer.text
        assert error_of(answer) == "oidc_unavailable"
        message = answer.json()["error"]["message"]
        assert nowhere in message
        assert "API keys still work" in message
        assert answer.headers["retry-after"] == "60"
        assert (await client.post(URL, json=GOOD, headers=bearer(KEY))).status_code == 202
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert "oidc" in ready.json()["error"]["details"]


# --- the caller's name ------------------------------------------------------------------


async def test_the_subject_is_the_rate_limit_bucket(
    oidc_runtime: Callable[..., Runtime], idp: FakeIdP, mono: Mono
) -> None:
    async with app_with_clock(oidc_runtime(idp.issuer, rate_burst=1), mono) as client:
        first = bearer(idp.token(sub="bot-a", scope="support-read"))
        again = bearer(idp.token(sub="bot-a", scope="support-read", jti="2"))
        other = bearer(idp.token(sub="bot-b", scope="support-read"))
        assert (await client.get("/v1/topics", headers=first)).status_code == 200
        assert (await client.get("/v1/topics", headers=again)).status_code == 429
        assert (await client.get("/v1/topics", headers=other)).status_code == 200


async def test_idempotency_is_scoped_to_the_configured_name_claim(
    oidc_runtime: Callable[..., Runtime], idp: FakeIdP, mono: Mono
) -> None:
    async with app_with_clock(oidc_runtime(idp.issuer, oidc_name_claim="azp"), mono) as client:

        async def post(azp: str, sub: str) -> str:
            token = idp.token(sub=sub, azp=azp, scope="request-assistance")
            headers = {**bearer(token), "Idempotency-Key": "conversation-1"}
            answer = await client.post(URL, json=GOOD, headers=headers)
            assert answer.status_code in (200, 202), answer.text
            return str(answer.json()["id"])

        first = await post("bot-a", "user-1")
        assert await post("bot-a", "user-2") == first  # same client: a repeat
        assert await post("bot-b", "user-1") != first  # another client: its own key
        missing = idp.token(sub="x", scope="request-assistance")  # no azp claim
        answer = await client.post(URL, json=GOOD, headers=bearer(missing))
        assert answer.status_code == 401
        assert "'azp'" in answer.json()["error"]["message"]


# --- tokens and keys kept apart -----------------------------------------------------------


async def test_keys_still_work_beside_tokens(
    client: httpx.AsyncClient, oidc_runtime: Callable[..., Runtime]
) -> None:
    assert (await client.post(URL, json=GOOD, headers=bearer(KEY))).status_code == 202
    answer = await client.post(URL, json=GOOD, headers=bearer("z" * 40))
    assert error_of(answer) == "invalid_credentials"  # a key, not a token
    missing = await client.post(URL, json=GOOD)
    assert error_of(missing) == "missing_credentials"
    assert "bearer token" in missing.json()["error"]["message"]


async def test_a_jwt_without_oidc_is_refused_without_a_key_lookup(
    make_runtime: Callable[..., Runtime], idp: FakeIdP
) -> None:
    runtime = make_runtime(api_keys=f"{KEY}:ingest")
    app = create_app(runtime, start_workers=False)
    lookups: list[str] = []
    authenticator: Authenticator = app.state.authenticator

    class CountingKeys(KeyStore):
        async def find_active(self, key: str) -> Any:
            lookups.append(key)
            return await super().find_active(key)

    authenticator.keys = CountingKeys(runtime.db)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
            token = idp.token(scope="request-assistance")
            answer = await client.post(URL, json=GOOD, headers=bearer(token))
            assert answer.status_code == 401
            assert "OIDC is not set up" in answer.json()["error"]["message"]
            assert lookups == []
            await client.post(URL, json=GOOD, headers=bearer("dbk_" + "q" * 43))
            assert lookups == ["dbk_" + "q" * 43]


def test_the_shapes_never_overlap(idp: FakeIdP) -> None:
    from deskbell.storage.keys import generate_key

    assert all(not looks_like_jwt(generate_key()) for _ in range(200))
    assert looks_like_jwt(idp.token())
    assert not looks_like_jwt("dbk_abc.def.ghi")
    with pytest.raises(ConfigError, match="shape of a JWT"):
        parse_env_keys(f"{idp.token()}:admin")


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "says"),
    [
        ({"oidc_issuer": "https://idp.example/"}, "DESKBELL_OIDC_AUDIENCE is not set"),
        ({"oidc_audience": "api"}, "DESKBELL_OIDC_ISSUER is not set"),
        ({"oidc_scopes": "a:ingest"}, "without DESKBELL_OIDC_ISSUER"),
        ({"oidc_issuer": "idp.example", "oidc_audience": "api"}, "http(s) URL"),
        ({"oidc_issuer": "https://i/", "oidc_audience": "a"}, "DESKBELL_OIDC_SCOPES is empty"),
        (
            {"oidc_issuer": "https://i/", "oidc_audience": "a", "oidc_scopes": "x:root"},
            "item 1",
        ),
    ],
)
def test_half_set_or_bad_settings_refuse_to_start(values: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        oidc_settings(Settings.model_validate(values))
    assert says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_off_by_default() -> None:
    assert oidc_settings(Settings()) is None


@pytest.mark.parametrize("scope", list(Scope))
def test_every_scope_can_be_mapped(scope: Scope) -> None:
    mapped = parse_scope_map(f"their-scope:{scope.value}")
    assert mapped == {"their-scope": scope.grants()}


def test_scopes_are_read_from_each_claim() -> None:
    claims = {"scope": "a b", "scp": ["c"], "permissions": ["d", 5]}
    assert token_scopes(claims) == ["a", "b", "c", "d"]
    assert token_scopes({"scope": 7}) == []


def test_cache_control_is_bounded() -> None:
    assert cache_seconds(None) == MIN_TTL
    assert cache_seconds("no-cache") == MIN_TTL
    assert cache_seconds("public, max-age=5") == MIN_TTL
    assert cache_seconds("public, max-age=7200, must-revalidate") == 7200
    assert cache_seconds("max-age=99999999") == MAX_TTL
    assert cache_seconds("s-maxage=9000") == MIN_TTL  # only max-age counts
