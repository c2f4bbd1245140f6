"""`POST /v1/assistance-requests/{id}/claim` and `.../resolve` (SPEC §9): 200 with the
handoff, 409 naming who holds it, 404, 422, the `agent` scope; the handoff in the request's
answer, the `?handoff=` filter, and the time-to-claim and unclaimed metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from deskbell.api.schemas import HandoffOut, RequestOut
from deskbell.wiring import Runtime
from tests.conftest import running_app

URL = "/v1/assistance-requests"
INGEST_KEY = "i" * 40
READ_KEY = "r" * 40
AGENT_KEY = "g" * 40
ADMIN_KEY = "a" * 40
KEYS = f"{INGEST_KEY}:ingest,{READ_KEY}:read,{AGENT_KEY}:agent,{ADMIN_KEY}:admin"
CONFIG = """
channels:
  desk:
    type: console
  lead:
    type: console
routes:
  - match: {topic: sales}
    to: [desk]
    escalate_after: 10m
    escalate_to: [lead]
default: reject
"""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def client(make_runtime: Callable[..., Runtime]) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_runtime(CONFIG, api_keys=KEYS), start_workers=False) as client:
        yield client


async def post(client: httpx.AsyncClient) -> str:
    answer = await client.post(
        URL, json={"topic": "sales", "description": "help"}, headers=bearer(INGEST_KEY)
    )
    assert answer.status_code == 202, answer.text
    # The 202 lists the route's notification, not the escalation step stored with it.
    assert [d["channel"] for d in answer.json()["deliveries"]] == ["desk"]
    return str(answer.json()["id"])


async def test_claim_then_409_for_someone_else(client: httpx.AsyncClient) -> None:
    request_id = await post(client)
    won = await client.post(
        f"{URL}/{request_id}/claim", json={"by": " Ana "}, headers=bearer(AGENT_KEY)
    )
    assert won.status_code == 200, won.text
    body = HandoffOut.model_validate(won.json())
    assert (body.state, body.claimed_by, body.via) == ("claimed", "Ana", "api")
    assert body.claimed_at is not None
    assert [(e.step, e.channel, e.status) for e in body.escalations] == [(1, "lead", "cancelled")]

    again = await client.post(
        f"{URL}/{request_id}/claim", json={"by": "Ana"}, headers=bearer(AGENT_KEY)
    )
    assert again.status_code == 200  # the holder's repeat

    lost = await client.post(
        f"{URL}/{request_id}/claim", json={"by": "Bob"}, headers=bearer(ADMIN_KEY)
    )
    assert lost.status_code == 409
    error = lost.json()["error"]
    assert error["code"] == "already_claimed"
    assert "Ana" in error["message"]
    assert error["details"]["claimed_by"] == "Ana"

    shown = await client.get(f"{URL}/{request_id}", headers=bearer(READ_KEY))
    request = RequestOut.model_validate(shown.json())
    assert (request.handoff.state, request.handoff.claimed_by) == ("claimed", "Ana")
    assert request.status == "pending"  # the notification itself is not sent yet
    kinds = sorted((d.channel, d.kind or "") for d in request.deliveries)
    assert kinds == [("desk", ""), ("lead", "escalation")]


async def test_resolve_defaults_to_the_callers_name_and_is_final(
    client: httpx.AsyncClient,
) -> None:
    request_id = await post(client)
    done = await client.post(f"{URL}/{request_id}/resolve", headers=bearer(AGENT_KEY))
    assert done.status_code == 200, done.text
    assert (done.json()["state"], done.json()["resolved_by"]) == ("resolved", "env-3")
    late = await client.post(
        f"{URL}/{request_id}/claim", json={"by": "Bob"}, headers=bearer(AGENT_KEY)
    )
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "already_resolved"
    other = await client.post(
        f"{URL}/{request_id}/resolve", json={"by": "Bob"}, headers=bearer(AGENT_KEY)
    )
    assert other.status_code == 409
    assert other.json()["error"]["details"]["resolved_by"] == "env-3"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"by": ""},
        {"by": "   "},
        {"by": "x" * 129},
        {"by": "Ana\r\nX-Injected: 1"},
        {"by": 5},
        {"by": "Ana", "extra": 1},
        [],
    ],
)
async def test_bad_bodies_are_422(client: httpx.AsyncClient, body: object) -> None:
    request_id = await post(client)
    answer = await client.post(f"{URL}/{request_id}/claim", json=body, headers=bearer(AGENT_KEY))
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "validation_failed"
    shown = await client.get(f"{URL}/{request_id}", headers=bearer(READ_KEY))
    assert shown.json()["handoff"]["state"] == "waiting"


async def test_not_json_is_422_not_500(client: httpx.AsyncClient) -> None:
    request_id = await post(client)
    answer = await client.post(
        f"{URL}/{request_id}/claim",
        content=b"{nope",
        headers={**bearer(AGENT_KEY), "Content-Type": "application/json"},
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "validation_failed"


@pytest.mark.parametrize("action", ["claim", "resolve"])
@pytest.mark.parametrize(
    "request_id", ["01900000-0000-7000-8000-000000000000", "not-an-id"], ids=["unknown", "bad"]
)
async def test_unknown_request_is_404(
    client: httpx.AsyncClient, action: str, request_id: str
) -> None:
    answer = await client.post(
        f"{URL}/{request_id}/{action}", json={"by": "Ana"}, headers=bearer(AGENT_KEY)
    )
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("key", "status"), [(INGEST_KEY, 403), (READ_KEY, 403), (None, 401)])
async def test_claim_needs_the_agent_or_admin_scope(
    client: httpx.AsyncClient, key: str | None, status: int
) -> None:
    request_id = await post(client)
    headers = bearer(key) if key else {}
    for action in ("claim", "resolve"):
        answer = await client.post(
            f"{URL}/{request_id}/{action}", json={"by": "Ana"}, headers=headers
        )
        assert answer.status_code == status
    shown = await client.get(f"{URL}/{request_id}", headers=bearer(AGENT_KEY))  # agent reads
    assert shown.json()["handoff"]["state"] == "waiting"
    # An agent key retries nothing (admin only).
    delivery = shown.json()["deliveries"][0]["id"]
    retry = await client.post(f"/v1/deliveries/{delivery}/retry", headers=bearer(AGENT_KEY))
    assert retry.status_code == 403


async def test_list_filter_and_metrics(client: httpx.AsyncClient) -> None:
    ids = [await post(client) for _ in range(3)]
    claim = await client.post(
        f"{URL}/{ids[0]}/claim", json={"by": "Ana"}, headers=bearer(AGENT_KEY)
    )
    assert claim.status_code == 200
    waiting = await client.get(URL, params={"handoff": "waiting"}, headers=bearer(READ_KEY))
    assert [item["id"] for item in waiting.json()["items"]] == [ids[2], ids[1]]
    claimed = await client.get(URL, params={"handoff": "claimed"}, headers=bearer(READ_KEY))
    assert [item["id"] for item in claimed.json()["items"]] == [ids[0]]
    bad = await client.get(URL, params={"handoff": "lost"}, headers=bearer(READ_KEY))
    assert bad.status_code == 422

    text = (await client.get("/metrics", headers=bearer(READ_KEY))).text
    assert "deskbell_requests_unclaimed 2.0" in text
    assert 'deskbell_time_to_claim_seconds_count{topic="sales"} 1.0' in text
