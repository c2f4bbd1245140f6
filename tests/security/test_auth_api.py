"""The app with auth on: every status of SPEC §3 (401, 403, 429), scopes per endpoint, keys
from the environment and the database, signed webhooks, and the redacted config."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from deskbell.api.app import create_app
from deskbell.api.webhooks import sign
from deskbell.models import Scope
from deskbell.storage.keys import KeyStore
from deskbell.wiring import Runtime
from tests.conftest import running_app

URL = "/v1/assistance-requests"
GOOD = {"topic": "sales", "description": "Wants a quote"}
INGEST_KEY = "i" * 40
READ_KEY = "r" * 40
ADMIN_KEY = "a" * 40
AGENT_KEY = "g" * 40
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
ENV = {"api_keys": f"{INGEST_KEY}:ingest,{READ_KEY}:read,{ADMIN_KEY}:admin,{AGENT_KEY}:agent"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(**ENV, webhook_secrets=SECRET)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(runtime, start_workers=False) as client:
        yield client


async def test_open_endpoints_need_nothing(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_credentials"),
        (bearer("nope" * 10), "invalid_credentials"),
        ({"Authorization": f"Basic {INGEST_KEY}"}, "invalid_credentials"),
        (bearer("x" * 600), "invalid_credentials"),
    ],
)
async def test_401_without_a_valid_key(
    client: httpx.AsyncClient, runtime: Runtime, headers: dict[str, str], code: str
) -> None:
    answer = await client.post(URL, json=GOOD, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == code
    assert answer.headers["www-authenticate"] == "Bearer"
    assert (await runtime.store.reads.list_requests())[0] == []
    assert (await client.get("/v1/topics", headers=headers)).status_code == 401


ENDPOINTS: list[tuple[str, str, Scope]] = [
    ("POST", URL, Scope.INGEST),
    ("GET", URL, Scope.READ),
    ("GET", f"{URL}/0000", Scope.READ),
    ("GET", "/v1/topics", Scope.READ),
    ("GET", "/v1/config", Scope.READ),
    ("POST", "/v1/deliveries/0000/retry", Scope.ADMIN),
    ("POST", f"{URL}/0000/claim", Scope.AGENT),
    ("POST", f"{URL}/0000/resolve", Scope.AGENT),
    ("POST", "/v1/routes/test", Scope.READ),
    ("PUT", "/v1/config", Scope.ADMIN),
    ("GET", "/v1/config/versions", Scope.READ),
    ("PUT", "/v1/topics/sales", Scope.ADMIN),
    ("GET", "/v1/api-keys", Scope.ADMIN),
]
KEYS = {
    Scope.INGEST: INGEST_KEY,
    Scope.READ: READ_KEY,
    Scope.ADMIN: ADMIN_KEY,
    Scope.AGENT: AGENT_KEY,
}
# Open by design: Slack's request signature is this route's authentication (SPEC §9).
OPEN_V1 = {"/v1/slack/interactions"}


@pytest.mark.parametrize(("method", "path", "needed"), ENDPOINTS)
@pytest.mark.parametrize("held", list(Scope))
async def test_scopes(
    client: httpx.AsyncClient, method: str, path: str, needed: Scope, held: Scope
) -> None:
    answer = await client.request(
        method, path, headers=bearer(KEYS[held]), json=GOOD if method == "POST" else None
    )
    if needed in held.grants():
        assert answer.status_code not in (401, 403), answer.text
    else:
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "insufficient_scope"
        assert answer.json()["error"]["details"]["required"] == needed.value


async def test_every_v1_route_is_guarded(runtime: Runtime) -> None:
    """A router included without a guard would be open: catch it here, for routers added
    later too. The bearer scheme is part of `authenticate`, so an operation lists it in
    `security` exactly when authentication runs for it."""
    schema = create_app(runtime, start_workers=False).openapi()
    operations = [
        (path, method, op) for path, item in schema["paths"].items() for method, op in item.items()
    ]
    assert ("/v1/assistance-requests", "post") in {(p, m) for p, m, _ in operations}
    for path, method, op in operations:
        guarded = {"HTTPBearer": []} in op.get("security", [])
        expected = (path.startswith("/v1") and path not in OPEN_V1) or path == "/metrics"
        assert guarded == expected, (method, path)
        if guarded:
            assert {"401", "403", "429"} <= set(op["responses"]), (method, path)
    await runtime.aclose()


async def test_database_keys_and_revocation(client: httpx.AsyncClient, runtime: Runtime) -> None:
    keys = KeyStore(runtime.db)
    _, plain = await keys.create(Scope.READ, runtime.clock.now(), name="dash")
    assert (await client.get("/v1/topics", headers=bearer(plain))).status_code == 200
    (listed,) = await keys.list()
    assert listed.last_used_at is not None
    await keys.revoke("dash", runtime.clock.now())
    answer = await client.get("/v1/topics", headers=bearer(plain))
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_credentials"


async def test_config_is_redacted(make_runtime: Callable[..., Runtime], fake_slack: Any) -> None:
    hook = fake_slack.url
    config = f"""
channels:
  s: {{type: slack, webhook_url: "{hook}"}}
  e: {{type: email, smtp_url: "smtp://user:hunter2pass@127.0.0.1:2525", from: a@example.com,
       to: [b@example.com]}}
routes:
  - match: {{topic: sales}}
    to: [s, e]
sources:
  bot:
    secrets: ["{SECRET}"]
"""
    runtime = make_runtime(config, **ENV)
    async with running_app(runtime, start_workers=False) as client:
        answer = await client.get("/v1/config", headers=bearer(READ_KEY))
    assert answer.status_code == 200
    text = answer.text
    for secret in (hook, "hunter2pass", SECRET, SECRET[6:], READ_KEY, INGEST_KEY):
        assert secret not in text
    body = answer.json()["config"]
    assert body["channels"]["s"]["webhook_url"] == "**********"
    assert body["sources"]["bot"]["secrets"] == ["**********"]
    assert body["routes"][0]["to"] == ["s", "e"]


def signed(
    body: bytes, msg_id: str = "msg_1", secret: str = SECRET, ts: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, msg_id, ts, body),
    }


async def test_signed_webhook_and_its_replay(client: httpx.AsyncClient, runtime: Runtime) -> None:
    body = orjson.dumps(GOOD)
    first = await client.post(URL, content=body, headers=signed(body))
    assert first.status_code == 202, first.text
    replay = await client.post(URL, content=body, headers=signed(body))
    assert replay.status_code == 202
    assert replay.json()["id"] == first.json()["id"]
    other = await client.post(URL, content=body, headers=signed(body, msg_id="msg_2"))
    assert other.json()["id"] != first.json()["id"]
    assert len((await runtime.store.reads.list_requests())[0]) == 2
    # A signature grants ingest only.
    hdrs = signed(b"", msg_id="msg_3")
    assert (await client.get("/v1/topics", headers=hdrs)).status_code == 403


@pytest.mark.parametrize(
    ("case", "code"),
    [("bad signature", "invalid_signature"), ("stale timestamp", "stale_signature")],
)
async def test_signed_webhook_refusals(
    client: httpx.AsyncClient, runtime: Runtime, case: str, code: str
) -> None:
    body = orjson.dumps(GOOD)
    if case == "bad signature":
        other = "whsec_" + base64.b64encode(b"z" * 32).decode()
        hdrs = signed(body, secret=other)
    else:
        hdrs = signed(body, ts=int(time.time()) - 600)
    answer = await client.post(URL, content=body, headers=hdrs)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == code
    assert (await runtime.store.reads.list_requests())[0] == []


async def test_config_sources_sign_too(make_runtime: Callable[..., Runtime]) -> None:
    config = f"""
channels:
  console: {{type: console}}
routes:
  - match: {{topic: sales}}
    to: [console]
sources:
  bot:
    secrets: ["{SECRET}"]
"""
    runtime = make_runtime(config)
    body = orjson.dumps(GOOD)
    async with running_app(runtime, start_workers=False) as client:
        assert (await client.post(URL, json=GOOD)).status_code == 401  # auth is on
        answer = await client.post(URL, content=body, headers=signed(body))
    assert answer.status_code == 202, answer.text


async def test_rate_limit_429_with_retry_after(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(**ENV, rate_limit=0.01, rate_burst=2)
    async with running_app(runtime, start_workers=False) as client:
        answers = [(await client.get("/v1/topics", headers=bearer(READ_KEY))) for _ in range(3)]
        other = await client.get("/v1/topics", headers=bearer(ADMIN_KEY))
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert int(answers[2].headers["retry-after"]) >= 1
    assert answers[2].json()["error"]["code"] == "rate_limited"
    assert other.status_code == 200  # per key


async def test_auth_turns_on_when_a_key_is_created(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    async with running_app(runtime, start_workers=False) as client:
        assert (await client.get("/v1/topics")).status_code == 200  # no credentials: open
        await KeyStore(runtime.db).create(Scope.READ, runtime.clock.now(), name="first")
        authenticator = client._transport.app.state.authenticator  # type: ignore[attr-defined]
        authenticator._next_probe = 0.0  # skip the one-second probe throttle
        assert (await client.get("/v1/topics")).status_code == 401
        await KeyStore(runtime.db).revoke("first", runtime.clock.now())
        # Fails closed: revoking every key never reopens a running server.
        assert (await client.get("/v1/topics")).status_code == 401
