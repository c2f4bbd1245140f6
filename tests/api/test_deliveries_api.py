"""Deliveries across requests (SPEC §2): `GET /v1/deliveries` with filters, the bulk replay
`POST /v1/deliveries/retry`, and every attempt in one request's detail. A real webhook peer
(the local receiver) answers 400, so deliveries go dead for real."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from deskbell.models import DeliveryStatus
from deskbell.wiring import Runtime
from tests.conftest import running_app, wait_for_request
from tests.fakes.receiver import Receiver

URL = "/v1/assistance-requests"
CONFIG = """
channels:
  hook:
    type: webhook
    url: {url}
    allow_private_networks: true
    retry: {{max_attempts: 1}}
  other:
    type: webhook
    url: {url}
    allow_private_networks: true
    retry: {{max_attempts: 1}}
routes:
  - match: {{topic: billing}}
    to: [hook]
  - match: {{topic: sales}}
    to: [other]
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        running.reply_with(400, "nope")
        yield running


@pytest.fixture
async def runtime(
    make_runtime: Callable[..., Runtime], receiver: Receiver
) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    runtime = make_runtime(CONFIG.format(url=receiver.url))
    async with running_app(runtime) as client:
        yield runtime, client


async def dead(runtime: Runtime, client: httpx.AsyncClient, topic: str) -> str:
    answer = await client.post(URL, json={"topic": topic, "description": "help"})
    assert answer.status_code == 202
    request_id = str(answer.json()["id"])
    await wait_for_request(
        runtime,
        request_id,
        lambda r: r.deliveries[0].status is DeliveryStatus.DEAD,
        what="a dead delivery",
    )
    return request_id


async def test_list_filters_and_bulk_retry(
    runtime: tuple[Runtime, httpx.AsyncClient], receiver: Receiver
) -> None:
    app, client = runtime
    billing = [await dead(app, client, "billing") for _ in range(2)]
    sales = await dead(app, client, "sales")
    page = (await client.get("/v1/deliveries", params={"status": "dead"})).json()
    assert [d["request_id"] for d in page["items"]] == [sales, *reversed(billing)]
    assert page["next_cursor"] is None
    hooks = (await client.get("/v1/deliveries", params={"channel": "hook", "limit": 1})).json()
    assert hooks["items"][0]["request_id"] == billing[1]
    nxt = await client.get(
        "/v1/deliveries", params={"channel": "hook", "cursor": hooks["next_cursor"]}
    )
    assert [d["request_id"] for d in nxt.json()["items"]] == [billing[0]]

    receiver.reply_with(200)
    answer = await client.post("/v1/deliveries/retry", json={"channel": "hook"})
    assert answer.status_code == 200
    assert answer.json() == {"retried": 2}
    for request_id in billing:
        await wait_for_request(
            app, request_id, lambda r: r.deliveries[0].status is DeliveryStatus.SENT
        )
    still = (await client.get("/v1/deliveries", params={"status": "dead"})).json()["items"]
    assert [d["request_id"] for d in still] == [sales]
    again = await client.post("/v1/deliveries/retry", json={"channel": "hook"})
    assert again.json() == {"retried": 0}


async def test_detail_lists_every_attempt(runtime: tuple[Runtime, httpx.AsyncClient]) -> None:
    app, client = runtime
    request_id = await dead(app, client, "billing")
    body = (await client.get(f"{URL}/{request_id}")).json()
    (attempt,) = body["deliveries"][0]["attempt_history"]
    assert attempt["number"] == 1
    assert attempt["outcome"] == "permanent"
    assert "400" in attempt["error"]
    assert attempt["duration_ms"] >= 0


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"status": "lost"}, "validation_failed"),
        ({"since": "yesterday"}, "validation_failed"),
        ({"cursor": "not-an-id"}, "invalid_cursor"),
        ({"limit": "0"}, "validation_failed"),
    ],
)
async def test_bad_filters_are_422(
    runtime: tuple[Runtime, httpx.AsyncClient], params: dict[str, str], code: str
) -> None:
    _, client = runtime
    answer = await client.get("/v1/deliveries", params=params)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == code


async def test_bulk_retry_refuses_unknown_fields(
    runtime: tuple[Runtime, httpx.AsyncClient],
) -> None:
    _, client = runtime
    answer = await client.post("/v1/deliveries/retry", json={"status": "sent"})
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "validation_failed"
