"""The ingest deadline (DESKBELL_INGEST_TIMEOUT) against a really stalled database: a
PostgreSQL table lock held by another connection, SQLite's write lock held by another
connection. A stalled commit is answered 503 `ingest_timeout` with Retry-After; a request
already handed to the database is stored once the lock goes, one whose batch had not begun
is not, the writer keeps working, and a retry with the same Idempotency-Key never makes a
duplicate."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from deskbell.storage.ingest import Ingest
from deskbell.storage.sqlite_ingest import sqlite_file
from deskbell.storage.tables import requests
from deskbell.wiring import Runtime
from tests.conftest import running_app
from tests.fakes import wait_until_async

URL = "/v1/assistance-requests"
TIMEOUT = 0.3


@pytest.fixture
async def runtime(make_runtime: Callable[..., Runtime], database_url: str) -> Runtime:
    """SQLite and, with DESKBELL_TEST_POSTGRES_URL, PostgreSQL."""
    return make_runtime(url=database_url, ingest_timeout=TIMEOUT)


@asynccontextmanager
async def write_lock(runtime: Runtime) -> AsyncIterator[None]:
    """Another connection holds the lock every ingest write needs, until the block ends."""
    path = sqlite_file(runtime.db.url)
    if path is not None:
        with sqlite_write_lock(path):
            yield
        return
    dsn = make_url(runtime.db.url).set(drivername="postgresql")
    conn = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("LOCK TABLE requests IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await transaction.rollback()
    finally:
        await conn.close()


@contextmanager
def sqlite_write_lock(path: str) -> Iterator[None]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def descriptions(runtime: Runtime) -> list[str]:
    async with runtime.db.reader.connect() as conn:
        payloads = (await conn.execute(sa.select(requests.c.payload))).scalars()
        return sorted(p["description"] for p in payloads)


def body(description: str) -> dict[str, Any]:
    return {"topic": "sales", "description": description}


def assert_timed_out(answer: httpx.Response) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "ingest_timeout"
    assert answer.headers["retry-after"] == "1"  # the deadline, rounded up to whole seconds


async def test_a_stalled_commit_is_503_and_the_keyed_retry_is_stored_once(
    runtime: Runtime,
) -> None:
    key = {"idempotency-key": "conv-123"}
    async with running_app(runtime, start_workers=False) as client:
        async with write_lock(runtime):
            keyed = await client.post(URL, json=body("keyed"), headers=key)
            plain = await client.post(URL, json=body("plain"))
        assert_timed_out(keyed)
        assert_timed_out(plain)
        retry = await client.post(URL, json=body("keyed"), headers=key)
        assert retry.status_code == 202, retry.text
        # The first keyed attempt went on after its 503; it ends stored or refused, never twice.
        await wait_until_async(lambda: runtime.ingest.deadline.late == 0, what="late work")
        again = await client.post(URL, json=body("keyed"), headers=key)
        assert again.json()["id"] == retry.json()["id"]
        # The plain request was in a batch the database had begun: stored once the lock went.
        await wait_until_async(lambda: runtime.ingest.committed == 1, what="the stalled batch")
        assert await descriptions(runtime) == ["keyed", "plain"]
        fresh = await client.post(URL, json=body("after"))  # the writer goes on
        assert fresh.status_code == 202
        assert await descriptions(runtime) == ["after", "keyed", "plain"]


def handed_over(ingest: Ingest) -> bool:
    """The writer has taken every request given to it so far (it is now stuck on the lock)."""
    return ingest.batcher.gathering == 0


async def test_a_request_whose_batch_had_not_begun_is_not_stored(runtime: Runtime) -> None:
    async with running_app(runtime, start_workers=False) as client:
        async with write_lock(runtime):
            first = asyncio.create_task(client.post(URL, json=body("in the stalled batch")))
            await wait_until_async(lambda: handed_over(runtime.ingest), what="first batch")
            second = await client.post(URL, json=body("still waiting"))
            assert_timed_out(await first)
            assert_timed_out(second)
        # In order: once this one is answered, the writer has passed the abandoned one.
        after = await client.post(URL, json=body("after the stall"))
        assert after.status_code == 202
        assert await descriptions(runtime) == ["after the stall", "in the stalled batch"]
