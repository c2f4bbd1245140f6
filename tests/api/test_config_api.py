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


async def test_an_invalid_document_names_each_key_and_stores_nothing(
    make_runtime: Callable[..., Runtime],
) -> None:
    bad = """
channels:
  a: {type: carrier-pigeon}
  b: {type: console, timeout: -1}
routes:
  - match: {topic: sales}
    to: [nowhere]
default: [console]
"""
    async with running_app(make_runtime(BASE), start_workers=False) as client:
        before = (await client.get("/v1/config/versions")).json()["items"]
        answer = await client.put("/v1/config", content=bad, headers=ADMIN)
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "invalid_config"
        keys = {d["key"] for d in error["details"]}
        assert {"channels.a.type", "channels.b.timeout", "routes[0].to[0]", "default[0]"} <= keys
        assert all(d["why"] for d in error["details"])
        checked = await client.post("/v1/config/validate", content=bad, headers=ADMIN)
        assert checked.status_code == 422
        assert {d["key"] for d in checked.json()["error"]["details"]} == keys
        assert (await client.get("/v1/config/versions")).json()["items"] == before


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ("channels: [", "application/yaml", 422, "invalid_config"),
        ("{", "application/json", 422, "invalid_config"),
        ("- a\n- b\n", "text/yaml", 422, "invalid_config"),
        ("when: 2024-01-01\n", "application/yaml", 422, "invalid_config"),
        (BASE, "text/plain", 415, "unsupported_media_type"),
    ],
)
async def test_bodies_that_are_not_a_config(
    make_runtime: Callable[..., Runtime], body: str, content_type: str, status: int, code: str
) -> None:
    async with running_app(make_runtime(BASE), start_workers=False) as client:
        for path in ("/v1/config", "/v1/config/validate"):
            method = client.put if path == "/v1/config" else client.post
            answer = await method(path, content=body, headers={"content-type": content_type})
            assert answer.status_code == status, answer.text
            assert answer.json()["error"]["code"] == code


async def test_json_and_validate(make_runtime: Callable[..., Runtime]) -> None:
    document = yaml.safe_load(with_topic("billing"))
    async with running_app(make_runtime(BASE), start_workers=False) as client:
        start = (await client.get("/v1/config")).json()["version"]
        checked = await client.post("/v1/config/validate", json=document)
        assert checked.status_code == 200, checked.text
        assert checked.json()["valid"] is True
        assert any("billing" in row["match"] for row in checked.json()["routing"])
        assert checked.json()["summary"]["routes"]["added"] == ["topic=billing"]
        assert (await client.get("/v1/config")).json()["version"] == start  # nothing stored
        put = await client.put("/v1/config", json=document)
        assert put.status_code == 201, put.text


async def test_if_match(make_runtime: Callable[..., Runtime]) -> None:
    async with running_app(make_runtime(BASE), start_workers=False) as client:
        start = (await client.get("/v1/config")).json()["version"]
        ok = await client.put(
            "/v1/config", content=with_topic("a"), headers={**ADMIN, "if-match": f'"{start}"'}
        )
        assert ok.status_code == 201, ok.text
        stale = await client.put(
            "/v1/config", content=with_topic("b"), headers={**ADMIN, "if-match": f'"{start}"'}
        )
        assert stale.status_code == 412, stale.text
        assert stale.json()["error"]["code"] == "stale_version"
        assert stale.json()["error"]["details"]["active"] == start + 1
        assert stale.headers["etag"] == f'"{start + 1}"'
        bare = await client.put(
            "/v1/config", content=with_topic("b"), headers={**ADMIN, "if-match": str(start + 1)}
        )
        assert bare.status_code == 201
        bad = await client.put(
            "/v1/config", content=with_topic("c"), headers={**ADMIN, "if-match": "yesterday"}
        )
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_if_match"
        rollback = await client.post(
            f"/v1/config/versions/{start}/activate", headers={"if-match": f'"{start}"'}
        )
        assert rollback.status_code == 412


async def test_two_writers_with_the_same_if_match_one_wins(
    make_runtime: Callable[..., Runtime], database_url: str
) -> None:
    async with running_app(make_runtime(BASE, url=database_url), start_workers=False) as client:
        start = (await client.get("/v1/config")).json()["version"]
        headers = {**ADMIN, "if-match": f'"{start}"'}
        answers = await asyncio.gather(
            *(client.put("/v1/config", content=with_topic(t), headers=headers) for t in "xy")
        )
        assert sorted(a.status_code for a in answers) == [201, 412], [a.text for a in answers]
        listed = (await client.get("/v1/config/versions")).json()["items"]
        assert [v["number"] for v in listed] == [start + 1, start]


HOOK = "https://crm.example.com/hooks/s3cr3t-t0ken"
WITH_SECRETS = f"""
channels:
  console:
    type: console
  hook:
    type: webhook
    url: {HOOK}
    headers:
      X-Api-Key: hunter2hunter2
  ref:
    type: webhook
    url: ${{HOOK_URL}}
routes:
  - match: {{topic: [sales, pricing]}}
    to: [console, hook, ref]
default: reject
"""


async def test_a_literal_secret_without_a_key_is_refused(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", "https://crm.example.com/other")
    async with running_app(make_runtime(BASE), start_workers=False) as client:
        answer = await client.put("/v1/config", content=WITH_SECRETS, headers=ADMIN)
        assert answer.status_code == 422, answer.text
        details = {d["key"]: d["why"] for d in answer.json()["error"]["details"]}
        assert set(details) == {"channels.hook.url", "channels.hook.headers.X-Api-Key"}
        assert all("${VAR}" in w and "DESKBELL_SECRET_KEY" in w for w in details.values())
        assert HOOK not in answer.text
        only_refs = WITH_SECRETS.replace(HOOK, "${HOOK_URL}").replace(
            "hunter2hunter2", "${HOOK_URL}"
        )
        assert (await client.put("/v1/config", content=only_refs, headers=ADMIN)).status_code == 201


async def test_literal_secrets_are_sealed_and_never_answered(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_URL", "https://crm.example.com/other")
    runtime = make_runtime(BASE, secret_key=KEY)
    async with running_app(runtime, start_workers=False) as client:
        put = await client.put("/v1/config", content=WITH_SECRETS, headers=ADMIN)
        assert put.status_code == 201, put.text
        number = put.json()["number"]
        stored = await runtime.store.config.get(number)
        assert stored is not None
        hook = stored.document["channels"]["hook"]
        assert hook["url"].startswith("enc:v1:")
        assert hook["headers"]["X-Api-Key"].startswith("enc:v1:")
        assert stored.document["channels"]["ref"]["url"] == "${HOOK_URL}"
        assert runtime.active.version == number  # this node runs it: the key opened them
        answers = [
            put,
            await client.get("/v1/config"),
            await client.get("/v1/config/versions"),
            await client.get(f"/v1/config/versions/{number}"),
            await client.post("/v1/config/validate", content=WITH_SECRETS, headers=ADMIN),
            await client.get("/v1/channels"),
        ]
        for answer in answers:
            assert answer.status_code == 200 or answer.status_code == 201, answer.text
            for secret in (HOOK, "s3cr3t", "hunter2", "enc:v1:", "crm.example.com/other"):
                assert secret not in answer.text
        shown = (await client.get("/v1/config")).json()["document"]
        assert shown["channels"]["hook"]["url"] == "**********"
        assert shown["channels"]["ref"]["url"] == "${HOOK_URL}"
        # What GET shows, sent back: the masked secrets keep their stored values.
        again = await client.put("/v1/config", json=shown)
        assert again.status_code == 200, again.text
        assert again.json()["changed"] is False
        # The same literal sent again keeps its token: nothing changed.
        same = await client.put("/v1/config", content=WITH_SECRETS, headers=ADMIN)
        assert same.json()["changed"] is False


async def _put(client: Any, path: str, body: Any) -> Any:
    return await client.put(path, json=body)


async def test_channel_and_topic_edits(make_runtime: Callable[..., Runtime]) -> None:
    async with running_app(make_runtime(BASE), start_workers=False) as client:
        made = await _put(client, "/v1/channels/extra", {"type": "console"})
        assert made.status_code == 201, made.text
        assert made.json()["summary"]["channels"]["added"] == ["extra"]
        bad = await _put(client, "/v1/channels/broken", {"type": "console", "timeout": "soon"})
        assert bad.status_code == 422
        assert [d["key"] for d in bad.json()["error"]["details"]] == ["channels.broken.timeout"]

        route = await _put(client, "/v1/topics/Billing", {"to": ["extra"]})
        assert route.status_code == 201, route.text
        assert route.json()["summary"]["routes"]["added"] == ["topic=billing"]
        replaced = await _put(client, "/v1/topics/billing", {"to": ["extra", "console"]})
        assert replaced.json()["summary"]["routes"]["changed"] == ["topic=billing"]
        unknown = await _put(client, "/v1/topics/audit", {"to": ["ghost"]})
        assert unknown.status_code == 422
        assert unknown.json()["error"]["details"][0]["key"].endswith(".to[0]")
        assert (await _put(client, "/v1/topics/x", {"match": {}, "to": ["x"]})).status_code == 422
        assert (await _put(client, "/v1/topics/no%20spaces", {"to": ["extra"]})).status_code == 422

        accepted = await client.post(
            "/v1/assistance-requests", json={"topic": "billing", "description": "invoice"}
        )
        assert accepted.status_code == 202, accepted.text
        assert {d["channel"] for d in accepted.json()["deliveries"]} == {"extra", "console"}

        in_use = await client.delete("/v1/channels/extra")
        assert in_use.status_code == 409
        details = in_use.json()["error"]["details"]
        assert details["routes"] == ["topic=billing"]
        assert details["deliveries"] == 1

        gone = await client.delete("/v1/topics/billing")
        assert gone.status_code == 201, gone.text
        assert gone.json()["summary"]["routes"]["removed"] == ["topic=billing"]
        assert (await client.delete("/v1/topics/billing")).status_code == 404
        still = await client.delete("/v1/channels/extra")
        assert still.status_code == 409  # its delivery is still pending
        assert still.json()["error"]["details"]["routes"] == []
        assert (await client.delete("/v1/channels/ghost")).status_code == 404


async def test_forced_channel_removal_settles_its_deliveries_dead(
    make_runtime: Callable[..., Runtime],
) -> None:
    from tests.conftest import statuses, wait_for_request

    config = """
channels:
  console: {type: console}
  extra: {type: console}
routes:
  - match: {topic: [sales, pricing]}
    to: [console, extra]
  - match: {topic: billing}
    to: [extra]
default: reject
"""
    runtime = make_runtime(config)
    async with running_app(runtime, start_workers=False) as client:
        accepted = await client.post(
            "/v1/assistance-requests", json={"topic": "sales", "description": "quote"}
        )
        assert accepted.status_code == 202
        forced = await client.delete("/v1/channels/extra", params={"force": "true"})
        assert forced.status_code == 201, forced.text
        document = (await client.get("/v1/config")).json()["document"]
        assert "extra" not in document["channels"]
        assert document["routes"] == [{"match": {"topic": ["sales", "pricing"]}, "to": ["console"]}]
        runtime.start_workers()
        done = await wait_for_request(
            runtime,
            accepted.json()["id"],
            lambda r: all(d.status in ("sent", "dead") for d in r.deliveries),
        )
        assert statuses(done) == {"console": "sent", "extra": "dead"}
        dead = next(d for d in done.deliveries if d.channel == "extra")
        assert dead.last_error == "channel 'extra' is not in the active config"
