"""`POST /v1/routes/test` (the dry run) and `GET /v1/topics` on the real app: both answer what
ingest does, under the active config or one sent with the dry run, at a given time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from deskbell.wiring import Runtime
from tests.conftest import running_app

READER = "reader-" + "r" * 40
INGESTER = "ingest-" + "i" * 40

CONFIG = """
channels:
  es-slack: {type: console}
  sales-slack: {type: console}
  big-deals: {type: console}
  night: {type: console}
  ops: {type: console}
routes:
  - match: {topic: sales, language: es}
    to: [es-slack]
  - match: {topic: sales, metadata.seats: {gte: 50}}
    to: [big-deals]
    continue: true
  - match: {topic: sales}
    to: [sales-slack]
  - match: {topic: support}
    when: {days: mon-fri, hours: "09:00-18:00", tz: Europe/Madrid}
    to: [ops]
  - match: {topic: support}
    to: [night]
default: reject
"""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def dry_run(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    return await client.post("/v1/routes/test", json=body)


@pytest.mark.parametrize(
    ("body", "channels", "indexes", "default", "rejected"),
    [
        ({"topic": "sales", "language": "ES"}, ["es-slack"], [0], False, False),
        ({"topic": "sales", "metadata": {"seats": 60}}, ["big-deals", "sales-slack"], [1, 2], 0, 0),
        ({"topic": "sales", "metadata": {"seats": "60"}}, ["sales-slack"], [2], False, False),
        ({"topic": "sales"}, ["sales-slack"], [2], False, False),
        ({"topic": "legal"}, [], [], True, True),
        # Monday 2026-03-30 10:00 Madrid (CEST, UTC+2) is 08:00 UTC: inside the window.
        ({"topic": "support", "at": "2026-03-30T08:00:00Z"}, ["ops"], [3], False, False),
        # Saturday: outside it, the next route takes it.
        ({"topic": "support", "at": "2026-03-28T10:00:00Z"}, ["night"], [4], False, False),
    ],
)
async def test_the_dry_run_names_channels_and_routes(
    make_runtime: Callable[..., Runtime],
    body: dict[str, Any],
    channels: list[str],
    indexes: list[int],
    default: bool,
    rejected: bool,
) -> None:
    runtime = make_runtime(CONFIG)
    async with running_app(runtime, start_workers=False) as client:
        answer = await dry_run(client, body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["channels"] == channels
    assert [route["index"] for route in data["routes"]] == indexes
    assert (data["default"], data["rejected"]) == (bool(default), bool(rejected))
    assert data["config"] == "active"


async def test_a_route_in_the_answer_shows_its_canonical_match_and_window(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(CONFIG)
    async with running_app(runtime, start_workers=False) as client:
        sales = (await dry_run(client, {"topic": "sales", "metadata": {"seats": 50}})).json()
        support = (await dry_run(client, {"topic": "support", "at": "2026-03-30T08:00:00Z"})).json()
    assert sales["routes"][0] == {
        "index": 1,
        "match": {"topic": "sales", "metadata.seats": {"gte": 50}},
        "when": None,
        "channels": ["big-deals"],
        "continue": True,
        "fallback": None,
    }
    assert support["at"] == "2026-03-30T08:00:00Z"
    assert support["routes"][0]["when"] == {
        "days": "mon-fri",
        "hours": "09:00-18:00",
        "tz": "Europe/Madrid",
    }


async def test_the_dry_run_agrees_with_ingest(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(CONFIG)
    request = {"topic": "sales", "description": "quote", "metadata": {"seats": 70}}
    async with running_app(runtime, start_workers=False) as client:
        dry = (await dry_run(client, request)).json()
        accepted = await client.post("/v1/assistance-requests", json=request)
    assert accepted.status_code == 202
    assert [d["channel"] for d in accepted.json()["deliveries"]] == dry["channels"]


async def test_a_given_config_is_tried_instead_of_the_active_one(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(CONFIG)
    other = {
        "channels": {"legal-mail": {"type": "console"}},
        "routes": [{"match": {"topic": "legal"}, "to": ["legal-mail"]}],
    }
    async with running_app(runtime, start_workers=False) as client:
        as_json = await dry_run(client, {"topic": "legal", "config": other})
        as_yaml = await dry_run(
            client,
            {"topic": "legal", "config": "channels: {m: {type: console}}\ndefault: [m]\n"},
        )
        still = await dry_run(client, {"topic": "legal"})
    assert as_json.json()["channels"] == ["legal-mail"]
    assert as_json.json()["config"] == "given"
    assert as_yaml.json()["channels"] == ["m"]
    assert as_yaml.json()["default"] is True
    assert still.json()["rejected"] is True  # the active config did not change


@pytest.mark.parametrize(
    ("body", "status", "code", "fragment"),
    [
        ({"topic": "Sales Team"}, 422, "validation_failed", "topic"),
        ({"description": "no topic"}, 422, "validation_failed", "topic"),
        ({"topic": "sales", "colour": "red"}, 422, "validation_failed", "colour"),
        ({"topic": "sales", "at": "tomorrow"}, 422, "validation_failed", "at"),
        ({"topic": "sales", "at": "2026-03-30T08:00:00"}, 422, "validation_failed", "at"),
        (
            {"topic": "sales", "config": {"routes": [{"match": {"topc": "x"}, "to": ["c"]}]}},
            422,
            "invalid_config",
            "routes[0]",
        ),
        ({"topic": "sales", "config": "routes: [\n"}, 422, "invalid_config", "YAML"),
        (
            {
                "topic": "x",
                "config": {
                    "channels": {"c": {"type": "console"}},
                    "routes": [{"match": {"topic": "x"}, "when": {"tz": "Mars/Base"}, "to": ["c"]}],
                },
            },
            422,
            "invalid_config",
            "routes[0].when",
        ),
        ([1, 2], 422, "validation_failed", "body"),
    ],
)
async def test_bad_input_is_a_clear_error(
    make_runtime: Callable[..., Runtime], body: Any, status: int, code: str, fragment: str
) -> None:
    runtime = make_runtime(CONFIG)
    async with running_app(runtime, start_workers=False) as client:
        answer = await client.post("/v1/routes/test", json=body)
        not_json = await client.post(
            "/v1/routes/test", content=b"{", headers={"content-type": "application/json"}
        )
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert fragment in answer.text
    assert not_json.status_code in (400, 422)
    assert "error" in not_json.json()


async def test_the_dry_run_needs_read_not_admin(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(CONFIG, api_keys=f"{READER}:read,{INGESTER}:ingest")
    async with running_app(runtime, start_workers=False) as client:
        reader = await client.post(
            "/v1/routes/test", json={"topic": "sales"}, headers=bearer(READER)
        )
        ingester = await client.post(
            "/v1/routes/test", json={"topic": "sales"}, headers=bearer(INGESTER)
        )
        anonymous = await client.post("/v1/routes/test", json={"topic": "sales"})
        topics = await client.get("/v1/topics", headers=bearer(READER))
    assert reader.status_code == 200
    assert ingester.status_code == 403
    assert anonymous.status_code == 401
    assert topics.status_code == 200


async def test_topics_tell_the_truth_about_conditional_routes(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(CONFIG)
    async with running_app(runtime, start_workers=False) as client:
        body = (await client.get("/v1/topics")).json()
    assert body["default"] == "reject"
    topics = {topic["topic"]: topic for topic in body["topics"]}
    assert list(topics) == ["sales", "support"]
    sales = topics["sales"]
    assert sales["channels"] == ["sales-slack"]  # a request with only the topic
    assert [(r["index"], r["condition"], r["channels"]) for r in sales["routes"]] == [
        (0, "language=es", ["es-slack"]),
        (1, "metadata.seats=(>= 50)", ["big-deals"]),
        (2, None, ["sales-slack"]),
    ]
    assert sales["reaches_default"] is False
    support = topics["support"]
    assert [(r["index"], r["condition"]) for r in support["routes"]] == [
        (3, "when mon-fri 09:00-18:00 Europe/Madrid"),
        (4, None),
    ]
    assert support["channels"] in (["ops"], ["night"])  # depends on now: both are true


async def test_a_topic_that_can_reach_the_default_says_so(
    make_runtime: Callable[..., Runtime],
) -> None:
    config = """
channels: {vip: {type: console}, rest: {type: console}}
routes:
  - match: {topic: billing, metadata.plan: {any: [enterprise, {regex: ^ent}]}}
    to: [vip]
  - match: {topic: {regex: "^bill"}, language: {not: en}}
    to: [rest]
default: [rest]
"""
    runtime = make_runtime(config)
    async with running_app(runtime, start_workers=False) as client:
        body = (await client.get("/v1/topics")).json()
    [billing] = body["topics"]
    assert billing["topic"] == "billing"
    assert [r["condition"] for r in billing["routes"]] == [
        "metadata.plan=(any of enterprise, /^ent/)",
        "language=(not en)",
    ]
    assert billing["reaches_default"] is True
    assert billing["channels"] == ["rest"]  # no language: `not en` matches
    assert body["default"] == ["rest"]
