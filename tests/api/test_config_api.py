"""The config API (SPEC §8): whole documents, versions, rollback, small edits, secrets."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import yaml

from deskbell.wiring import Runtime
from tests.conftest import running_app

ADMIN = {"content-type": "application/yaml"}
KEY = "k" * 40

BASE = """
channels:
  console:
    type: console
routes:
  - match: {topic: [sales, pricing]}
    to: [console]
default: reject
"""


def with_topic(topic: str, channel: str = "console") -> str:
    doc = yaml.safe_load(BASE)
    doc["routes"].append({"match": {"topic": topic}, "to": [channel]})
    return yaml.safe_dump(doc)


async def test_put_get_versions_and_rollback(make_runtime: Callable[..., Runtime]) -> None:
    async with running_app(make_runtime(BASE), start_workers=False) as client:
        first = await client.get("/v1/config")
        assert first.status_code == 200, first.text
        start = first.json()["version"]
        assert start is not None  # the start-up file was adopted
        assert first.headers["etag"] == f'"{start}"'

        put = await client.put("/v1/config", content=with_topic("billing"), headers=ADMIN)
        assert put.status_code == 201, put.text
        body = put.json()
        assert body["number"] == start + 1
        assert body["changed"] is True
        assert body["summary"]["routes"]["added"] == ["topic=billing"]
        assert put.headers["etag"] == f'"{start + 1}"'
        accepted = await client.post(
            "/v1/assistance-requests", json={"topic": "billing", "description": "hi"}
        )
        assert accepted.status_code == 202, accepted.text

        again = await client.put("/v1/config", content=with_topic("billing"), headers=ADMIN)
        assert again.status_code == 200
        assert again.json()["changed"] is False
        assert again.json()["number"] == start + 1

        listed = (await client.get("/v1/config/versions")).json()["items"]
        assert [v["number"] for v in listed] == [start + 1, start]
        assert [v["active"] for v in listed] == [True, False]

        back = await client.post(f"/v1/config/versions/{start}/activate")
        assert back.status_code == 201, back.text
        assert back.json()["origin"] == "rollback"
        assert back.json()["summary"]["rollback_of"] == start
        assert back.json()["summary"]["routes"]["removed"] == ["topic=billing"]
        refused = await client.post(
            "/v1/assistance-requests", json={"topic": "billing", "description": "hi"}
        )
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "unknown_topic"
        assert (await client.get("/v1/config/versions/999")).status_code == 404
        assert (await client.post("/v1/config/versions/999/activate")).status_code == 404
