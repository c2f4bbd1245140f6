"""POST /v1/assistance-requests: 202 after commit, and every 4xx of SPEC §1 with its code,
each checked to have stored nothing."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from deskbell.api.app import create_app
from deskbell.wiring import Runtime
from tests.conftest import running_app
from tests.fakes import wait_until_async

URL = "/v1/assistance-requests"
GOOD = {"topic": "sales", "description": "Wants a quote for 40 seats"}


@pytest.fixture
async def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(max_body_bytes=2048)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(runtime, start_workers=False) as client:
        yield client


async def stored_count(runtime: Runtime) -> int:
    items, _ = await runtime.store.reads.list_requests(limit=200)
    return len(items)


async def test_accepted_after_commit_with_location(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    answer = await client.post(URL, json=GOOD)
    assert answer.status_code == 202
    body = answer.json()
    assert answer.headers["location"] == f"{URL}/{body['id']}"
    assert body["topic"] == "sales"
    assert body["status"] == "accepted"
    assert [(d["channel"], d["status"]) for d in body["deliveries"]] == [("console", "pending")]
    stored = await runtime.store.reads.get_request(body["id"])
    assert stored is not None
    assert stored.payload.description == GOOD["description"]


async def test_full_payload_round_trips(client: httpx.AsyncClient) -> None:
    payload = {
        "topic": "  Pricing ",
        "description": "  Discount for NGOs?  ",
        "customer": {"id": "c1", "name": "Ana", "email": "ana@example.com", "phone": "+34 600"},
        "conversation_url": "https://chat.example.com/c/1",
        "language": "es",
        "metadata": {"plan": "pro", "seats": 40, "trial": True},
    }
    answer = await client.post(URL, json=payload)
    assert answer.status_code == 202
    shown = (await client.get(answer.headers["location"])).json()
    assert shown["topic"] == "pricing"
    assert shown["description"] == "Discount for NGOs?"
    assert shown["customer"]["email"] == "ana@example.com"
    assert shown["metadata"] == {"plan": "pro", "seats": 40, "trial": True}


def too_many_keys() -> dict[str, Any]:
    return {**GOOD, "metadata": {f"k{i}": i for i in range(51)}}


REJECTIONS: list[tuple[str, dict[str, str], bytes, int, str]] = [
    ("not json", {"content-type": "application/json"}, b"{nope", 400, "invalid_json"),
    ("empty body", {"content-type": "application/json"}, b"", 400, "invalid_json"),
    ("form post", {"content-type": "application/x-www-form-urlencoded"}, b"a=1", 415,
     "unsupported_media_type"),
    ("no content type", {}, b'{"topic":"sales","description":"x"}', 415,
     "unsupported_media_type"),
    ("too large", {"content-type": "application/json"},
     b'{"topic":"sales","description":"' + b"x" * 3000 + b'"}', 413, "body_too_large"),
    ("array", {"content-type": "application/json"}, b"[1,2]", 422, "validation_failed"),
    ("missing topic", {"content-type": "application/json"}, b'{"description":"x"}', 422,
     "validation_failed"),
    ("blank description", {"content-type": "application/json"},
     b'{"topic":"sales","description":"   "}', 422, "validation_failed"),
    ("bad topic chars", {"content-type": "application/json"},
     b'{"topic":"sales team!","description":"x"}', 422, "validation_failed"),
    ("unknown field", {"content-type": "application/json"},
     b'{"topic":"sales","description":"x","priority":1}', 422, "validation_failed"),
    ("bad email", {"content-type": "application/json"},
     b'{"topic":"sales","description":"x","customer":{"email":"nope"}}', 422,
     "validation_failed"),
    ("ftp url", {"content-type": "application/json"},
     b'{"topic":"sales","description":"x","conversation_url":"ftp://x"}', 422,
     "validation_failed"),
    ("bad language", {"content-type": "application/json"},
     b'{"topic":"sales","description":"x","language":"not a tag"}', 422, "validation_failed"),
    ("nested metadata", {"content-type": "application/json"},
     b'{"topic":"sales","description":"x","metadata":{"a":{"b":1}}}', 422, "validation_failed"),
    ("NaN in metadata", {"content-type": "application/json"},
     b'{"topic":"sales","description":"x","metadata":{"a":NaN}}', 422, "validation_failed"),
    ("Infinity in metadata", {"content-type": "application/json"},
     b'{"topic":"sales","description":"x","metadata":{"a":-Infinity}}', 422,
     "validation_failed"),
    ("unknown topic", {"content-type": "application/json"},
     b'{"topic":"legal","description":"x"}', 422, "unknown_topic"),
    ("long idempotency key", {"content-type": "application/json", "idempotency-key": "k" * 256},
     b'{"topic":"sales","description":"x"}', 422, "validation_failed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [r[1:] for r in REJECTIONS],
    ids=[r[0] for r in REJECTIONS],
)
async def test_rejections_store_nothing(
    client: httpx.AsyncClient,
    runtime: Runtime,
    headers: dict[str, str],
    body: bytes,
    status: int,
    code: str,
) -> None:
    answer = await client.post(URL, content=body, headers=headers)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert await stored_count(runtime) == 0


async def test_too_many_metadata_keys(client: httpx.AsyncClient, runtime: Runtime) -> None:
    answer = await client.post(URL, json=too_many_keys())
    assert answer.status_code == 422
    assert "at most 50 keys" in answer.text
    assert await stored_count(runtime) == 0


async def test_unknown_topic_lists_known_topics(client: httpx.AsyncClient) -> None:
    answer = await client.post(URL, json={"topic": "legal", "description": "x"})
    assert answer.json()["error"]["details"] == {"known_topics": ["pricing", "sales"]}


async def test_validation_details_name_the_field(client: httpx.AsyncClient) -> None:
    answer = await client.post(URL, json={"topic": "sales", "description": "x", "extra": 1})
    (detail,) = answer.json()["error"]["details"]
    assert detail["loc"] == ["extra"]


async def test_streamed_body_over_the_limit_is_refused(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"topic":"sales","description":"'
        for _ in range(100):
            yield b"x" * 100

    answer = await client.post(URL, content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 413
    assert await stored_count(runtime) == 0


async def test_idempotent_repeat_and_conflict(client: httpx.AsyncClient, runtime: Runtime) -> None:
    headers = {"idempotency-key": "bot-42"}
    first = await client.post(URL, json=GOOD, headers=headers)
    again = await client.post(URL, json=GOOD, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    conflict = await client.post(URL, json={**GOOD, "description": "other"}, headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    assert await stored_count(runtime) == 1


async def test_database_unavailable_is_503(
    make_runtime: Callable[..., Runtime], tmp_path: Path
) -> None:
    # The database's directory vanishes after start (a missing one at start is refused by
    # `connect`, as a start-up error): no connection can be opened any more.
    directory = tmp_path / "gone"
    directory.mkdir()
    runtime = make_runtime(url=f"sqlite+aiosqlite:///{directory / 'deskbell.db'}")
    directory.rmdir()
    async with running_app(runtime, start_workers=False) as client:
        answer = await client.post(URL, json=GOOD)
        ready = await client.get("/readyz")
        # aiosqlite stops the thread of a failed connect without waiting for it; let those
        # threads finish while this loop still runs, or they report to a closed loop later.
        await wait_until_async(
            lambda: not any("_connection_worker_thread" in t.name for t in threading.enumerate()),
            what="aiosqlite threads of the failed connects to end",
        )
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "database_unavailable"
    assert ready.status_code == 503


async def test_served_the_same_behind_a_root_path(runtime: Runtime) -> None:
    """Behind uvicorn's `--root-path /desk` the path arrives as /desk/v1/...: ingest still
    answers it, with its request id, and counts it like any other."""
    app = create_app(runtime, start_workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, root_path="/desk")
        async with httpx.AsyncClient(transport=transport, base_url="http://deskbell") as client:
            answer = await client.post(f"/desk{URL}", json=GOOD, headers={"X-Request-ID": "rp"})
            assert answer.status_code == 202, answer.text
            assert answer.headers["x-request-id"] == "rp"
            assert await stored_count(runtime) == 1
            runtime.metrics.flush()
            sample = ("deskbell_requests_total", {"topic": "sales", "outcome": "accepted"})
            assert runtime.metrics.registry.get_sample_value(*sample) == 1.0
