"""Ids, cursors and times from the URL are checked before they reach the database: a NUL byte or
any other garbage is a JSON 404 or 422 on both engines, never a 500 (PostgreSQL refuses NUL in
text) nor a silently ignored parameter."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from deskbell.wiring import Runtime
from tests.conftest import ENGINES, fresh_database, running_app

URL = "/v1/assistance-requests"


@pytest.fixture(params=ENGINES)
async def client(
    request: pytest.FixtureRequest, tmp_path: Path, make_runtime: Callable[..., Runtime]
) -> AsyncIterator[httpx.AsyncClient]:
    (tmp_path / request.param).mkdir()
    async with (
        fresh_database(request.param, tmp_path / request.param) as url,
        running_app(make_runtime(url=url), start_workers=False) as client,
    ):
        yield client


async def post(client: httpx.AsyncClient) -> str:
    answer = await client.post(URL, json={"topic": "sales", "description": "help"})
    assert answer.status_code == 202
    return str(answer.json()["id"])


def assert_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"]["code"] == code


@pytest.mark.parametrize(
    "bad",
    [
        "x%00",
        "%00",
        "does-not-exist",
        "01a20e96-a158-7083-9904-12079b6f92e%00",
        "x" * 200,
        "01a20e96-a158-7083-9904-12079b6f92ed",  # a well-formed id nobody has
    ],
)
async def test_an_id_that_names_nothing_is_404_json(client: httpx.AsyncClient, bad: str) -> None:
    assert_error(await client.get(f"{URL}/{bad}"), 404, "not_found")
    assert_error(await client.post(f"/v1/deliveries/{bad}/retry"), 404, "not_found")


async def test_an_id_is_found_in_any_case(client: httpx.AsyncClient) -> None:
    request_id = await post(client)
    answer = await client.get(f"{URL}/{request_id.upper()}")
    assert answer.status_code == 200
    assert answer.json()["id"] == request_id


@pytest.mark.parametrize("cursor", ["\x00", "garbage", "x\x00y", "1" * 64, ""])
async def test_a_cursor_that_is_not_one_is_422(client: httpx.AsyncClient, cursor: str) -> None:
    await post(client)
    assert_error(await client.get(URL, params={"cursor": cursor}), 422, "invalid_cursor")
    params = {"cursor": cursor, "status": "pending"}
    assert_error(await client.get(URL, params=params), 422, "invalid_cursor")


async def test_a_cursor_from_a_page_still_pages(client: httpx.AsyncClient) -> None:
    ids = [await post(client) for _ in range(3)]
    first = (await client.get(URL, params={"limit": 2})).json()
    second = (await client.get(URL, params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [i["id"] for i in first["items"] + second["items"]] == ids[::-1]
    assert second["next_cursor"] is None


@pytest.mark.parametrize(
    "since", ["0.5", "1700000000", "\x00", "2026-03-01T12:00:00\x00Z", "yesterday", "2026-03-01"]
)
async def test_since_is_an_iso_8601_time_with_a_zone(client: httpx.AsyncClient, since: str) -> None:
    assert_error(await client.get(URL, params={"since": since}), 422, "validation_failed")


@pytest.mark.parametrize("since", ["2000-01-01T00:00:00Z", "2000-01-01T01:00:00+01:00"])
async def test_since_accepts_iso_8601_with_a_zone(client: httpx.AsyncClient, since: str) -> None:
    request_id = await post(client)
    page = (await client.get(URL, params={"since": since})).json()
    assert [i["id"] for i in page["items"]] == [request_id]
    assert (await client.get(URL, params={"since": "2999-01-01T00:00:00Z"})).json()["items"] == []


async def test_nul_in_other_query_values_is_422(client: httpx.AsyncClient) -> None:
    for params in ({"topic": "sales\x00"}, {"status": "dead\x00"}, {"limit": "1\x00"}):
        assert_error(await client.get(URL, params=params), 422, "validation_failed")
