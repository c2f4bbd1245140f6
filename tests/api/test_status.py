"""Reading back: one request, the paged list, topics, health and the OpenAPI docs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import httpx
import pytest

from deskbell.api.schemas import (
    DeliveryOut,
    RequestDetailOut,
    RequestPage,
    overall_status,
)
from deskbell.models import Delivery, DeliveryStatus
from deskbell.wiring import Runtime
from tests.conftest import running_app, wait_for_request
from tests.fakes.slack import FakeSlack

URL = "/v1/assistance-requests"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def client(make_runtime: Callable[..., Runtime]) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_runtime(), start_workers=False) as client:
        yield client


async def post(client: httpx.AsyncClient, topic: str = "sales") -> str:
    answer = await client.post(URL, json={"topic": topic, "description": "help"})
    assert answer.status_code == 202
    return str(answer.json()["id"])


async def test_get_one_shows_deliveries(client: httpx.AsyncClient) -> None:
    request_id = await post(client)
    body = (await client.get(f"{URL}/{request_id}")).json()
    assert body["id"] == request_id
    assert body["status"] == "pending"
    (delivery,) = body["deliveries"]
    assert delivery["channel"] == "console"
    assert delivery["status"] == "pending"
    assert delivery["attempts"] == 0
    assert delivery["sent_at"] is None


async def test_get_unknown_is_404_json(client: httpx.AsyncClient) -> None:
    answer = await client.get(f"{URL}/does-not-exist")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


async def test_list_cursor_paging_and_filter(client: httpx.AsyncClient) -> None:
    ids = [await post(client, "sales" if i % 2 else "pricing") for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(URL, params=params)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    sales = (await client.get(URL, params={"topic": "sales"})).json()["items"]
    assert [i["id"] for i in sales] == [ids[3], ids[1]]
    pending = (await client.get(URL, params={"status": "pending"})).json()["items"]
    assert len(pending) == 5
    assert (await client.get(URL, params={"status": "sent"})).json()["items"] == []


FULL = {
    "topic": "Sales",
    "description": " Quiere un presupuesto ",
    "customer": {"name": "Ana Núñez", "email": "Ana@Example.COM"},
    "conversation_url": "https://chat.example.com/c/1",
    "language": "es",
    "metadata": {"plan": "pro", "seats": 40, "ratio": 0.5, "trial": False},
}


async def test_reads_answer_the_bytes_their_response_models_render(
    client: httpx.AsyncClient,
) -> None:
    """The read routes render plain data rather than their response models: the bytes must
    be the models' own (key order, nulls, timestamps), and the payload as it was accepted."""
    answer = await client.post(URL, json=FULL)
    assert answer.status_code == 202
    full = answer.json()["id"]
    bare = await post(client)
    one = await client.get(f"{URL}/{full}")
    page = await client.get(URL, params={"status": "pending"})
    for got, model in ((one, RequestDetailOut), (page, RequestPage)):
        assert got.status_code == 200
        assert got.headers["content-type"] == "application/json"
        assert model.model_validate_json(got.content).model_dump_json().encode() == got.content
    item = one.json()
    assert {k: item[k] for k in FULL} == {
        "topic": "sales",
        "description": "Quiere un presupuesto",
        "customer": {"id": None, "name": "Ana Núñez", "email": "Ana@example.com", "phone": None},
        "conversation_url": "https://chat.example.com/c/1",
        "language": "es",
        "metadata": {"plan": "pro", "seats": 40, "ratio": 0.5, "trial": False},
    }
    assert item["created_at"].endswith("Z")
    newest, oldest = page.json()["items"]
    assert (newest["id"], newest["customer"], newest["metadata"]) == (bare, None, {})
    # the list is the detail without each delivery's attempt rows
    assert [d.pop("attempt_history") for d in item["deliveries"]] == [[]]
    assert oldest == item


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 1000}, {"status": "lost"}, {"since": "yesterday"}]
)
async def test_list_bad_query_is_422_json(
    client: httpx.AsyncClient, params: dict[str, object]
) -> None:
    answer = await client.get(URL, params=params)
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "validation_failed"


async def test_topics(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/topics")).json()
    assert body["default"] == "reject"
    assert [(t["topic"], t["channels"]) for t in body["topics"]] == [
        ("pricing", ["console"]),
        ("sales", ["console"]),
    ]
    for topic in body["topics"]:  # one route, matching on the topic alone
        assert [r["condition"] for r in topic["routes"]] == [None]
        assert topic["reaches_default"] is False


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_openapi_documents_the_ingest_body(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    post_op = schema["paths"][URL]["post"]
    ref = post_op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert ref == "#/components/schemas/AssistanceRequestIn"
    body = schema["components"]["schemas"]["AssistanceRequestIn"]
    assert set(body["required"]) == {"topic", "description"}
    assert "Customer" in schema["components"]["schemas"]
    assert {"202", "400", "413", "415", "422"} <= set(post_op["responses"])
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


async def test_retry_endpoint_refuses_live_delivery(client: httpx.AsyncClient) -> None:
    request_id = await post(client)
    delivery_id = (await client.get(f"{URL}/{request_id}")).json()["deliveries"][0]["id"]
    answer = await client.post(f"/v1/deliveries/{delivery_id}/retry")
    assert answer.status_code == 409
    assert answer.json()["error"]["code"] == "not_dead"
    assert (await client.post("/v1/deliveries/nope/retry")).status_code == 404


def _delivery(key: str, status: str, fallback_of: str | None = None) -> Delivery:
    return Delivery(
        id=key,
        request_id="r",
        channel=key,
        status=DeliveryStatus(status),
        attempts=1,
        created_at=T0,
        next_attempt_at=None,
        last_error=None,
        sent_at=None,
        fallback_of=fallback_of,
    )


@pytest.mark.parametrize(
    ("deliveries", "expected"),
    [
        ([], "sent"),
        ([("a", "sent")], "sent"),
        ([("a", "sent"), ("b", "retrying")], "pending"),
        ([("a", "dead")], "dead"),
        ([("a", "sent"), ("b", "dead")], "dead"),
        ([("a", "dead"), ("f", "pending", "a")], "pending"),  # the fallback may still reach
        ([("a", "dead"), ("f", "sent", "a")], "sent"),  # covered: a person got it
        ([("a", "dead"), ("f", "dead", "a")], "dead"),
        ([("a", "dead"), ("b", "dead"), ("f", "sent", "a")], "dead"),  # b is not covered
        ([("a", "sent"), ("b", "dead"), ("f", "sent", "b")], "sent"),
    ],
)
def test_request_status_counts_a_dead_delivery_covered_by_its_sent_fallback_as_sent(
    deliveries: list[tuple[str, ...]], expected: str
) -> None:
    assert overall_status([_delivery(*d) for d in deliveries]) == expected


DEAD_END = """
channels:
  bad-slack:
    type: slack
    webhook_url: {url}
    retry: {{max_attempts: 1}}
routes:
  - match: {{topic: sales}}
    to: [bad-slack]
"""


async def test_retry_answers_the_bytes_its_response_model_renders(
    make_runtime: Callable[..., Runtime], fake_slack: FakeSlack
) -> None:
    fake_slack.reply_with(503)
    runtime = make_runtime(DEAD_END.format(url=fake_slack.url))
    async with running_app(runtime) as client:
        posted = (await client.post(URL, json={"topic": "sales", "description": "x"})).json()
        delivery_id = posted["deliveries"][0]["id"]
        await wait_for_request(
            runtime,
            posted["id"],
            lambda s: s.deliveries[0].status is DeliveryStatus.DEAD,
            what="the delivery dead",
        )
        retried = await client.post(f"/v1/deliveries/{delivery_id}/retry")
    assert retried.status_code == 202
    assert retried.headers["content-type"] == "application/json"
    rendered = DeliveryOut.model_validate_json(retried.content).model_dump_json().encode()
    assert rendered == retried.content
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 1)
    assert retried.json()["last_error"]
