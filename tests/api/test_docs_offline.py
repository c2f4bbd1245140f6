"""The API's own description: /docs and /redoc work offline (assets from the package, no other
host named), the OpenAPI schema shows the topic pattern, a wrong method is a JSON 405 whose
`Allow` lists every method of the path, and HEAD is answered wherever GET is."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from deskbell.models import TOPIC_PATTERN
from deskbell.wiring import Runtime
from tests.conftest import running_app

URL = "/v1/assistance-requests"
READ_KEY = "r" * 40
ABSOLUTE_URL = re.compile(r"""(?:https?:)?//[^\s"'<>)]+""")


@pytest.fixture
async def client(make_runtime: Callable[..., Runtime]) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_runtime(), start_workers=False) as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_name_no_other_host_and_their_assets_load(
    client: httpx.AsyncClient, page: str
) -> None:
    answer = await client.get(page)
    assert answer.status_code == 200
    html = answer.text
    assert ABSOLUTE_URL.findall(html) == []  # no CDN, no fonts, no validator badge
    assets = re.findall(r"""(?:src|href)="(/[^"]+)\"""", html)
    assert assets, html
    for asset in assets:
        loaded = await client.get(asset)
        assert loaded.status_code == 200, asset
        assert len(loaded.content) > 1000, asset
    assert (await client.get("/openapi.json")).status_code == 200


async def test_the_schema_gives_the_topic_pattern(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    topic = schema["components"]["schemas"]["AssistanceRequestIn"]["properties"]["topic"]
    assert topic["pattern"] == TOPIC_PATTERN
    body = schema["paths"][URL]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/AssistanceRequestIn"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", URL, "GET, HEAD, POST"),
        ("DELETE", URL, "GET, HEAD, POST"),
        ("PATCH", f"{URL}/0190b7a4-0000-7000-8000-000000000000", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/readyz", "GET, HEAD"),
        ("POST", "/docs/assets/swagger-ui.css", "GET, HEAD"),
    ],
)
async def test_a_wrong_method_is_405_with_every_allowed_method(
    client: httpx.AsyncClient, method: str, path: str, allowed: str
) -> None:
    answer = await client.request(method, path)
    assert answer.status_code == 405
    assert answer.headers["allow"] == allowed
    assert answer.json()["error"] == {
        "code": "method_not_allowed",
        "message": f"{method} is not allowed here",
        "details": {"allowed": allowed.split(", ")},
    }


async def test_posting_a_request_still_takes_the_ingest_path(client: httpx.AsyncClient) -> None:
    answer = await client.post(URL, json={"topic": "sales", "description": "x"})
    assert answer.status_code == 202


@pytest.mark.parametrize("path", ["/healthz", "/readyz", URL, "/v1/topics", "/openapi.json"])
async def test_head_answers_like_get_without_a_body(client: httpx.AsyncClient, path: str) -> None:
    got = await client.get(path)
    head = await client.head(path)
    assert got.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == got.headers["content-type"]
    assert "x-request-id" in head.headers


async def test_head_needs_the_read_scope_as_get_does(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(api_keys=f"{READ_KEY}:read")
    async with running_app(runtime, start_workers=False) as client:
        refused = await client.head(URL)
        allowed = await client.head(URL, headers={"authorization": f"Bearer {READ_KEY}"})
        open_probe = await client.head("/healthz")
    assert refused.status_code == 401
    assert refused.content == b""
    assert allowed.status_code == 200
    assert open_probe.status_code == 200
