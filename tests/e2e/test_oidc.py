"""OIDC end to end: `deskbell serve` as a subprocess against the local identity provider
(tests/fakes/idp.py). Tokens per scope, keys made and revoked over HTTP and seen by the CLI,
the JWKS server stopped after the first fetch, an issuer never reached, and half-set settings
refused at start with one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.idp import FakeIdP
from tests.process import Deskbell, free_port, run_to_exit

KEY = "ingest-key-" + "k" * 40
URL = "/v1/assistance-requests"
GOOD = {"topic": "sales", "description": "Wants a quote"}
SCOPES = "request-assistance:ingest,support-admin:admin"


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with FakeIdP() as server:
        server.add_key("RSA")
        yield server


def environment(tmp_path: Path, issuer: str, **extra: str) -> dict[str, str]:
    return {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'oidc.db'}",
        "DESKBELL_LOG_FORMAT": "json",
        "DESKBELL_API_KEYS": f"{KEY}:ingest",
        "DESKBELL_OIDC_ISSUER": issuer,
        "DESKBELL_OIDC_AUDIENCE": "deskbell-api",
        "DESKBELL_OIDC_SCOPES": SCOPES,
        **extra,
    }


def serve(tmp_path: Path, env: dict[str, str]) -> Deskbell:
    return Deskbell(["serve"], env=env, workdir=tmp_path, port=free_port()).wait_ready()


def test_tokens_keys_over_http_and_a_jwks_outage(tmp_path: Path, idp: FakeIdP) -> None:
    env = environment(tmp_path, idp.issuer)
    running = serve(tmp_path, env)
    try:
        client = running.client
        ingest = idp.token(sub="support-bot", scope="request-assistance")
        admin = idp.token(sub="ops-alice", permissions=["support-admin"])
        posted = client.post(URL, json=GOOD, headers=bearer(ingest))
        assert posted.status_code == 202, posted.text
        read = client.get(posted.headers["location"], headers=bearer(admin))
        assert read.status_code == 200, read.text
        assert client.get("/v1/topics", headers=bearer(ingest)).status_code == 403
        assert client.get("/readyz").status_code == 200

        made = client.post(
            "/v1/api-keys", json={"name": "bot", "scope": "read"}, headers=bearer(admin)
        )
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        assert client.get("/v1/topics", headers=bearer(key)).status_code == 200
        code, listing = run_to_exit(["apikey", "list"], env=env, workdir=tmp_path)
        assert code == 0, listing
        assert "bot" in listing
        assert "active" in listing
        gone = client.delete(f"/v1/api-keys/{made.json()['id']}", headers=bearer(admin))
        assert gone.status_code == 200
        assert client.get("/v1/topics", headers=bearer(key)).status_code == 401
        code, listing = run_to_exit(["apikey", "list"], env=env, workdir=tmp_path)
        assert "revoked" in listing

        fetches = idp.jwks_fetches
        idp.stop()  # the keys are cached: tokens keep working, and nobody asks again
        again = client.post(
            URL,
            json=GOOD,
            headers=bearer(idp.token(sub="support-bot", scope="request-assistance", jti="2")),
        )
        assert again.status_code == 202, again.text
        assert client.get("/readyz").status_code == 200
        assert idp.jwks_fetches == fetches
    finally:
        output = running.stop()
    assert ingest not in output
    assert admin not in output
    assert key not in output
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    by = {e["event"]: e.get("by") for e in events if e["event"].startswith("api_key_")}
    assert by == {"api_key_created": "ops-alice", "api_key_revoked": "ops-alice"}


def test_an_issuer_never_reached(tmp_path: Path, idp: FakeIdP) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/realm"
    running = serve(tmp_path, environment(tmp_path, nowhere))
    try:
        client = running.client
        token = idp.token(scope="request-assistance")
        answer = client.post(URL, json=GOOD, headers=bearer(token))
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "oidc_unavailable"
        assert client.post(URL, json=GOOD, headers=bearer(KEY)).status_code == 202
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "oidc" in ready.json()["error"]["details"]
    finally:
        output = running.stop()
    assert "oidc_keys_fetch_failed" in output


@pytest.mark.parametrize(
    ("unset", "says"),
    [
        ("DESKBELL_OIDC_AUDIENCE", "DESKBELL_OIDC_AUDIENCE is not set"),
        ("DESKBELL_OIDC_ISSUER", "DESKBELL_OIDC_ISSUER is not set"),
    ],
)
def test_half_set_settings_refuse_to_start(tmp_path: Path, unset: str, says: str) -> None:
    env = environment(tmp_path, "https://idp.example/", DESKBELL_PORT=str(free_port()))
    del env[unset]
    code, output = run_to_exit(["serve"], env=env, workdir=tmp_path)
    assert code == 2, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert says in errors[0]
    assert "Traceback" not in output
