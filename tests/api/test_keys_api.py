"""API keys over HTTP (SPEC §3): POST answers the key once, GET lists without keys or hashes,
DELETE revokes for every node at its next request; admin only; bad input answered with the
error shape (409 duplicate name, 422 bad scope or name, 404 unknown id)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from deskbell.models import Scope
from deskbell.storage.keys import KEY_PREFIX, KeyStore, hash_key
from deskbell.wiring import Runtime
from tests.conftest import running_app

ADMIN = "a" * 40
READ = "r" * 40
KEYS = "/v1/api-keys"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def runtime(make_runtime: Callable[..., Runtime], database_url: str) -> Runtime:
    return make_runtime(url=database_url, api_keys=f"{ADMIN}:admin,{READ}:read")


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(runtime, start_workers=False) as client:
        yield client


async def test_create_list_use_revoke(client: httpx.AsyncClient, runtime: Runtime) -> None:
    created = await client.post(KEYS, json={"name": "bot", "scope": "read"}, headers=bearer(ADMIN))
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"id", "name", "scope", "key"}
    assert (body["name"], body["scope"]) == ("bot", "read")
    plain = body["key"]
    assert plain.startswith(KEY_PREFIX)
    # The same store as the CLI: KeyStore finds it.
    found = await KeyStore(runtime.db).find_active(plain)
    assert found is not None
    assert found.id == body["id"]

    assert (await client.get("/v1/topics", headers=bearer(plain))).status_code == 200
    listed = await client.get(KEYS, headers=bearer(ADMIN))
    assert listed.status_code == 200
    (item,) = listed.json()["items"]
    assert item["id"] == body["id"]
    assert item["active"] is True
    assert item["last_used_at"] is not None
    assert plain not in listed.text
    assert hash_key(plain) not in listed.text
    assert plain[len(KEY_PREFIX) + 4 :] not in listed.text

    revoked = await client.delete(f"{KEYS}/{body['id']}", headers=bearer(ADMIN))
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["active"] is False
    assert revoked.json()["revoked_at"] is not None
    refused = await client.get("/v1/topics", headers=bearer(plain))
    assert refused.status_code == 401
    again = await client.delete(f"{KEYS}/{body['id']}", headers=bearer(ADMIN))
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]


async def test_revocation_holds_on_another_node_at_its_next_request(
    runtime: Runtime, make_runtime: Callable[..., Runtime], database_url: str
) -> None:
    other = make_runtime(url=database_url, api_keys=f"{ADMIN}:admin")
    async with (
        running_app(runtime, start_workers=False) as node_a,
        running_app(other, start_workers=False) as node_b,
    ):
        body = {"name": "shared", "scope": "ingest"}
        created = (await node_a.post(KEYS, json=body, headers=bearer(ADMIN))).json()
        post = {"topic": "sales", "description": "x"}
        url = "/v1/assistance-requests"
        assert (
            await node_b.post(url, json=post, headers=bearer(created["key"]))
        ).status_code == 202
        await node_a.delete(f"{KEYS}/{created['id']}", headers=bearer(ADMIN))
        assert (
            await node_b.post(url, json=post, headers=bearer(created["key"]))
        ).status_code == 401


async def test_only_admin(client: httpx.AsyncClient) -> None:
    for method, path in (("GET", KEYS), ("POST", KEYS), ("DELETE", f"{KEYS}/{'0' * 32}")):
        body = {"name": "x", "scope": "read"} if method == "POST" else None
        answer = await client.request(method, path, json=body, headers=bearer(READ))
        assert answer.status_code == 403, (method, answer.text)
        assert answer.json()["error"]["code"] == "insufficient_scope"
        assert (await client.request(method, path, json=body)).status_code == 401


async def test_duplicate_name_is_409(client: httpx.AsyncClient) -> None:
    body = {"name": "twice", "scope": "ingest"}
    assert (await client.post(KEYS, json=body, headers=bearer(ADMIN))).status_code == 201
    answer = await client.post(KEYS, json={**body, "scope": "read"}, headers=bearer(ADMIN))
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "name_taken"
    assert len((await client.get(KEYS, headers=bearer(ADMIN))).json()["items"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "scope": "root"},
        {"name": "x", "scope": ""},
        {"name": "x"},
        {"scope": "read"},
        {"name": "", "scope": "read"},
        {"name": "n" * 65, "scope": "read"},
        {"name": "bad\nname", "scope": "read"},
        {"name": 5, "scope": "read"},
        {"name": "x", "scope": "read", "key": "dbk_chosen-by-the-caller-0000000000000"},
        ["name", "scope"],
    ],
)
async def test_bad_bodies_are_422(client: httpx.AsyncClient, body: object) -> None:
    answer = await client.post(KEYS, json=body, headers=bearer(ADMIN))
    assert answer.status_code == 422, answer.text
    assert set(answer.json()["error"]) == {"code", "message", "details"}
    assert (await client.get(KEYS, headers=bearer(ADMIN))).json()["items"] == []


async def test_not_json_is_refused(client: httpx.AsyncClient) -> None:
    answer = await client.post(
        KEYS, content=b"{nope", headers={**bearer(ADMIN), "content-type": "application/json"}
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "validation_failed"


@pytest.mark.parametrize("scope", list(Scope))
async def test_every_scope_can_be_given(client: httpx.AsyncClient, scope: Scope) -> None:
    body = {"name": f"k-{scope.value}", "scope": scope.value}
    answer = await client.post(KEYS, json=body, headers=bearer(ADMIN))
    assert answer.status_code == 201, answer.text
    assert answer.json()["scope"] == scope.value


async def test_delete_unknown_or_malformed_id_is_404(client: httpx.AsyncClient) -> None:
    named = await client.post(
        KEYS, json={"name": "by-name", "scope": "read"}, headers=bearer(ADMIN)
    )
    assert named.status_code == 201
    for key_id in ("0190a5f4-0000-7000-8000-000000000000", "by-name", "x" * 100, "%00"):
        answer = await client.delete(f"{KEYS}/{key_id}", headers=bearer(ADMIN))
        assert answer.status_code == 404, (key_id, answer.text)
        assert answer.json()["error"]["code"] == "not_found"
    (item,) = (await client.get(KEYS, headers=bearer(ADMIN))).json()["items"]
    assert item["active"] is True  # a name is not an id here
