"""Shared fixtures: a fresh database per test on SQLite and, when DESKBELL_TEST_POSTGRES_URL is
set, on PostgreSQL too (a new database per test, dropped after). With the variable set and the
server unreachable, the PostgreSQL tests fail: CI must not pass by skipping them."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from deskbell.api.app import create_app
from deskbell.models import DeliveryStatus, StoredRequest
from deskbell.settings import Settings
from deskbell.storage.engine import connect
from deskbell.storage.migrate import upgrade
from deskbell.storage.store import Storage
from deskbell.wiring import Runtime, build_runtime
from tests.fakes.slack import FakeSlack
from tests.fakes.smtp import FakeSMTP

POSTGRES_URL = os.environ.get("DESKBELL_TEST_POSTGRES_URL")
ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """A CLI command run in-process (Typer's runner) points the root logger at the runner's
    stream, which closes after it: put the handlers back, so later lines have somewhere to go."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@asynccontextmanager
async def fresh_database(engine: str, tmp_path: Path) -> AsyncIterator[str]:
    """A URL to an empty, migrated database of the given engine."""
    if engine == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'deskbell.db'}"
        yield await _migrated(url)
        return
    if not POSTGRES_URL:
        pytest.skip("DESKBELL_TEST_POSTGRES_URL is not set")
    base = make_url(POSTGRES_URL)
    name = f"deskbell_test_{uuid.uuid4().hex[:12]}"
    admin_dsn = base.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(admin_dsn)  # unreachable -> the test errors, never skips
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield await _migrated(base.set(database=name).render_as_string(hide_password=False))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _migrated(url: str) -> str:
    db = connect(url)
    try:
        await upgrade(db)
    finally:
        await db.dispose()
    return url


@pytest.fixture(params=ENGINES)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
async def postgres_url(tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database("postgres", tmp_path) as url:
        yield url


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> AsyncIterator[str]:
    async with fresh_database("sqlite", tmp_path) as url:
        yield url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Storage]:
    db = connect(database_url)
    yield Storage.open(db)
    await db.dispose()


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        yield slack


@pytest.fixture
def fake_smtp() -> Iterator[FakeSMTP]:
    with FakeSMTP() as smtp:
        yield smtp


CONSOLE_CONFIG = """
channels:
  console:
    type: console
routes:
  - match: {topic: [sales, pricing]}
    to: [console]
default: reject
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / f"deskbell-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(text)
        return path

    return write


@asynccontextmanager
async def running_app(
    runtime: Runtime, *, start_workers: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """The real app with its lifespan (workers included), reached through ASGI in-process."""
    app = create_app(runtime, start_workers=start_workers)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://deskbell") as client:
            yield client


@pytest.fixture
def make_runtime(
    sqlite_url: str, write_config: Callable[[str], Path]
) -> Iterator[Callable[..., Runtime]]:
    def make(config: str = CONSOLE_CONFIG, url: str | None = None, **settings: Any) -> Runtime:
        values = {
            "database_url": url or sqlite_url,
            "config": write_config(config),
            "poll_seconds": 0.05,
            **settings,
        }
        return build_runtime(Settings(**values), console=io.StringIO())

    return make


async def wait_for_request(
    runtime: Runtime,
    request_id: str,
    done: Callable[[StoredRequest], bool],
    timeout: float = 10.0,
    what: str = "request state",
) -> StoredRequest:
    """Poll the store until `done(request)` holds; fail with the last state after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        stored = await runtime.store.reads.get_request(request_id)
        if stored is not None and done(stored):
            return stored
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {stored}")
        await asyncio.sleep(0.02)


def statuses(stored: StoredRequest) -> dict[str, DeliveryStatus]:
    return {d.channel: d.status for d in stored.deliveries}
