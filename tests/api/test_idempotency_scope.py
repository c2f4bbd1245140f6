"""Idempotency-Key per caller (API key, webhook source, or anonymous with auth off), and
"the same body" as the same parsed JSON, not the same bytes."""

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
from deskbell.models import AssistanceRequestIn
from deskbell.wiring import Runtime
from tests.conftest import running_app

URL = "/v1/assistance-requests"
KEY_A = "a" * 40
KEY_B = "b" * 40
SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()


def headers(api_key: str, idempotency_key: str = "conv-123") -> dict[str, str]:
    return {
        "authorization": f"Bearer {api_key}",
        "idempotency-key": idempotency_key,
        "content-type": "application/json",
    }


@pytest.fixture
async def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(api_keys=f"{KEY_A}:ingest,{KEY_B}:ingest", webhook_secrets=SECRET)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(runtime, start_workers=False) as client:
        yield client


async def stored(runtime: Runtime) -> int:
    return len((await runtime.store.reads.list_requests(limit=50))[0])


async def test_two_callers_may_use_the_same_key(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    bot_a = await client.post(
        URL, json={"topic": "sales", "description": "A"}, headers=headers(KEY_A)
    )
    bot_b = await client.post(
        URL, json={"topic": "sales", "description": "B"}, headers=headers(KEY_B)
    )
    assert bot_a.status_code == bot_b.status_code == 202, (bot_a.text, bot_b.text)
    assert bot_a.json()["id"] != bot_b.json()["id"]
    again_a = await client.post(
        URL, json={"topic": "sales", "description": "A"}, headers=headers(KEY_A)
    )
    assert again_a.json()["id"] == bot_a.json()["id"]  # each caller gets its own back
    # A signed webhook sender is a caller of its own too.
    body = orjson.dumps({"topic": "sales", "description": "W"})
    now = int(time.time())
    signed = {
        "content-type": "application/json",
        "idempotency-key": "conv-123",
        "webhook-id": "msg_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(SECRET, "msg_1", now, body),
    }
    hook = await client.post(URL, content=body, headers=signed)
    assert hook.status_code == 202, hook.text
    assert hook.json()["id"] not in {bot_a.json()["id"], bot_b.json()["id"]}
    assert await stored(runtime) == 3


async def test_the_same_json_in_another_order_is_a_repeat(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    first = await client.post(
        URL,
        content=b'{"topic":"sales","description":"Quote","metadata":{"plan":"pro","seats":40}}',
        headers=headers(KEY_A),
    )
    reordered = await client.post(
        URL,
        content=b'{ "metadata": {"seats": 40, "plan": "pro"},\n  "description": "Quote", '
        b'"topic": "sales" }',
        headers=headers(KEY_A),
    )
    assert first.status_code == reordered.status_code == 202, reordered.text
    assert reordered.json()["id"] == first.json()["id"]
    other = await client.post(
        URL,
        content=b'{"topic":"sales","description":"Quote","metadata":{"plan":"pro","seats":41}}',
        headers=headers(KEY_A),
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert await stored(runtime) == 1


async def test_with_auth_off_every_client_address_is_one_caller(
    make_runtime: Callable[..., Runtime],
) -> None:
    """Anonymous is one owner: a bot retrying from another address still gets its answer."""
    runtime = make_runtime()
    app = create_app(runtime, start_workers=False)
    body: dict[str, Any] = {"topic": "sales", "description": "x"}
    key = {"idempotency-key": "conv-123"}
    answers = []
    async with app.router.lifespan_context(app):
        for address in ("127.0.0.1", "::1"):
            transport = httpx.ASGITransport(app=app, client=(address, 4000))
            async with httpx.AsyncClient(transport=transport, base_url="http://d") as client:
                answers.append(await client.post(URL, json=body, headers=key))
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].json()["id"] == answers[1].json()["id"]


async def test_a_key_stored_before_scoping_no_longer_matches(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Rows written before keys were scoped hold the raw key: a retry with it is new."""
    payload = AssistanceRequestIn(topic="sales", description="old")
    targets = runtime.active.router.targets(payload)
    old, _ = await runtime.store.requests.accept_one(
        payload, targets, runtime.clock.now(), idempotency_key="conv-123", body_hash="x" * 64
    )
    answer = await client.post(
        URL, json={"topic": "sales", "description": "old"}, headers=headers(KEY_A)
    )
    assert answer.status_code == 202
    assert answer.json()["id"] != old.id
    assert await stored(runtime) == 2
