"""`/readyz` turns red when writes fail, not only when reads do: another connection holds the
write lock (SQLite `BEGIN IMMEDIATE` from the stdlib module; PostgreSQL `LOCK TABLE ... IN
ACCESS EXCLUSIVE MODE` from asyncpg), or a write fails outright (as on a full disk). 503
within the probe's timeout, naming the check; 200 again once writes commit."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from deskbell.storage.engine import connect
from deskbell.storage.health import PROBE_INTERVAL, PROBE_TIMEOUT, WriteProbe
from deskbell.wiring import Runtime
from tests.conftest import fresh_database, running_app

# The probe's own timeout, its one-second cache and a margin for a slow, shared machine.
WITHIN = PROBE_TIMEOUT + PROBE_INTERVAL + 2.0


@asynccontextmanager
async def ready_app(
    engine: str, tmp_path: Path, make_runtime: Callable[..., Runtime]
) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    (tmp_path / engine).mkdir()
    async with (
        fresh_database(engine, tmp_path / engine) as url,
        running_app(make_runtime(url=url), start_workers=False) as client,
    ):
        answer = await client.get("/readyz")
        assert answer.status_code == 200, answer.text
        yield client, url


async def readiness_within(client: httpx.AsyncClient, status: int) -> httpx.Response:
    """Ask until `/readyz` answers `status`; fail after WITHIN seconds."""
    deadline = time.monotonic() + WITHIN
    while True:
        answer = await client.get("/readyz")
        if answer.status_code == status:
            return answer
        assert time.monotonic() < deadline, f"still {answer.status_code}: {answer.text}"
        await asyncio.sleep(0.05)  # a cached answer comes back at once: ask again shortly


def assert_writes_failing(answer: httpx.Response, cause: str) -> None:
    error = answer.json()["error"]
    assert error["code"] == "database_writes_failing"
    assert list(error["details"]) == ["database_writes"]
    assert cause in error["details"]["database_writes"]


async def test_sqlite_write_lock_held_elsewhere(
    tmp_path: Path, make_runtime: Callable[..., Runtime]
) -> None:
    async with ready_app("sqlite", tmp_path, make_runtime) as (client, url):
        holder = sqlite3.connect(str(make_url(url).database), isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            answer = await readiness_within(client, 503)
            assert time.monotonic() - started < WITHIN
            assert_writes_failing(answer, "no write lock within 1s")
            holder.execute("ROLLBACK")
            await readiness_within(client, 200)
        finally:
            holder.close()


async def test_sqlite_write_that_fails(
    tmp_path: Path, make_runtime: Callable[..., Runtime]
) -> None:
    """A full disk fails the write or its commit with SQLITE_FULL; a trigger raises the same
    error (a test cannot fill the disk of a shared machine)."""
    async with ready_app("sqlite", tmp_path, make_runtime) as (client, url):
        other = sqlite3.connect(str(make_url(url).database), isolation_level=None)
        try:
            other.execute(
                "CREATE TRIGGER full_disk BEFORE UPDATE ON heartbeat "
                "BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
            )
            answer = await readiness_within(client, 503)
            assert_writes_failing(answer, "database or disk is full")
            other.execute("DROP TRIGGER full_disk")
            await readiness_within(client, 200)
        finally:
            other.close()


@pytest.mark.postgres
async def test_postgres_table_locked_elsewhere(
    tmp_path: Path, make_runtime: Callable[..., Runtime]
) -> None:
    async with ready_app("postgres", tmp_path, make_runtime) as (client, url):
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        holder = await asyncpg.connect(dsn)
        try:
            locking = holder.transaction()
            await locking.start()
            await holder.execute("LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            answer = await readiness_within(client, 503)
            assert time.monotonic() - started < WITHIN
            assert_writes_failing(answer, "no write lock within 1s")
            await locking.rollback()
            await readiness_within(client, 200)
        finally:
            await holder.close()


@pytest.mark.postgres
async def test_postgres_write_that_fails(
    tmp_path: Path, make_runtime: Callable[..., Runtime]
) -> None:
    """A write refused by the server (here a read-only database, as after a failover or on a
    full disk) turns readiness red while `SELECT 1` still answers."""
    async with ready_app("postgres", tmp_path, make_runtime) as (client, url):
        name = make_url(url).database
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            # New sessions read the setting; the pool's idle ones are dropped to pick it up.
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            answer = await readiness_within(client, 503)
            assert_writes_failing(answer, "read-only transaction")
            await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            await readiness_within(client, 200)
        finally:
            await admin.close()


class CountingClock:
    """The wall clock, counting how often it is read: once per probe."""

    def __init__(self) -> None:
        self.reads = 0

    def now(self) -> datetime:
        self.reads += 1
        return datetime.now(UTC)


async def test_one_probe_a_second_however_many_ask(sqlite_url: str) -> None:
    db = connect(sqlite_url)
    clock = CountingClock()
    seconds = [0.0]
    probe = WriteProbe(db, clock, monotonic=lambda: seconds[0])
    try:
        assert await asyncio.gather(*(probe.check() for _ in range(20))) == [None] * 20
        assert clock.reads == 1  # the 19 others waited for that probe and took its result
        seconds[0] = 0.99
        assert await probe.check() is None
        assert clock.reads == 1
        seconds[0] = 1.0
        assert await probe.check() is None
        assert clock.reads == 2
    finally:
        await db.dispose()
