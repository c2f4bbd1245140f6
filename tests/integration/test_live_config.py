"""Nodes follow the active config version (live.py), in one process: several runtimes on one
database stand for several nodes. Start-up adoption of the file, switching on `sync`, the
refusal of a version a node cannot build, SIGHUP's reload, channels kept when unchanged."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from deskbell.channels.base import ChannelContext, ChannelSettings, ChannelType, Message, SendResult
from deskbell.config.changes import summarize
from deskbell.config.document import document_from_text
from deskbell.delivery.circuits import Circuits
from deskbell.live import adopt_file
from deskbell.settings import Settings
from deskbell.wiring import Runtime, build_runtime
from tests.conftest import running_app
from tests.fakes import wait_until_async

FIRST = """
channels:
  console:
    type: console
  other:
    type: console
routes:
  - match: {topic: sales}
    to: [console]
default: reject
"""
# FIRST plus a topic, and `other` changed: `console` is the same.
SECOND = """
channels:
  console:
    type: console
  other:
    type: console
    timeout: 7
routes:
  - match: {topic: sales}
    to: [console]
  - match: {topic: billing}
    to: [other]
default: reject
"""
NEEDS_VAR = """
channels:
  hook:
    type: webhook
    url: http://127.0.0.1:9/${DESKBELL_TEST_SURELY_UNSET_VAR}
routes:
  - match: {topic: refunds}
    to: [hook]
default: reject
"""
BODY = {"topic": "billing", "description": "card declined"}
URL = "/v1/assistance-requests"


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Callable[..., Any]:
    """`node(text)`: a runtime with its own config file on the shared database, served
    in-process with its lifespan (adoption and watcher included)."""

    @asynccontextmanager
    async def make(
        text: str = FIRST, **settings: Any
    ) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
        path = tmp_path / f"node-{len(list(tmp_path.glob('node-*')))}.yaml"
        path.write_text(text)
        values = {"database_url": database_url, "config": path, "poll_seconds": 0.05, **settings}
        runtime = build_runtime(Settings(**values), console=io.StringIO())
        async with running_app(runtime, start_workers=False) as client:
            yield runtime, client

    return make


async def store_version(runtime: Runtime, text: str) -> int:
    """Stored and activated as the config API does (origin api), without the API."""
    versions = runtime.store.config
    active = await versions.active()
    document = document_from_text(text, "application/yaml")
    stored = await versions.create(
        document,
        author="test",
        origin="api",
        summary=summarize(active.document if active else None, document),
        expected=active.number if active else 0,
    )
    return stored.number


async def test_the_file_becomes_version_1_once_and_every_node_runs_it(
    node: Callable[..., Any],
) -> None:
    async with AsyncExitStack() as stack:
        a, _ = await stack.enter_async_context(node())
        b, _ = await stack.enter_async_context(node())
        versions = await a.store.config.list()
        assert [(v.number, v.origin) for v in versions] == [(1, "file")]
        assert versions[0].author.startswith("file:")
        assert a.live.number == b.live.number == 1


async def test_a_new_version_is_followed_and_unchanged_channels_are_kept(
    node: Callable[..., Any],
) -> None:
    async with node() as (a, _), node() as (b, client):
        before = dict(b.active.channels)
        unknown = await client.post(URL, json=BODY)
        assert unknown.status_code == 422
        assert unknown.json()["error"]["code"] == "unknown_topic"
        number = await store_version(a, SECOND)
        await b.live.sync()  # on PostgreSQL its LISTEN may have been quicker
        assert b.live.number == number
        assert b.active.source == f"version {number}"
        answer = await client.post(URL, json=BODY)
        assert answer.status_code == 202, answer.text
        assert b.active.channels["console"] is before["console"]  # same settings: same object
        assert b.active.channels["other"] is not before["other"]  # changed: a new one
        assert "billing" in b.metrics.topics
        metrics = await client.get("/metrics")
        assert f"deskbell_config_version {float(number)}" in metrics.text
        ready = (await client.get("/readyz")).json()
        assert ready["config_version"] == number


async def test_the_watcher_follows_without_being_asked(node: Callable[..., Any]) -> None:
    async with node() as (a, _), node(config_poll_seconds=0.1) as (b, client):
        number = await store_version(a, SECOND)
        deadline = asyncio.get_running_loop().time() + 5
        while b.live.number != number:
            assert asyncio.get_running_loop().time() < deadline, "node b did not follow"
            await asyncio.sleep(0.05)
        assert (await client.post(URL, json=BODY)).status_code == 202


async def test_a_version_this_node_cannot_build_is_refused_and_readyz_says_so(
    node: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    async with node() as (a, _), node() as (b, client):
        number = await store_version(a, NEEDS_VAR)
        assert await b.live.sync() is False
        assert b.live.number == 1  # the old config stays
        assert b.live.refused == number
        assert "DESKBELL_TEST_SURELY_UNSET_VAR" in (b.live.error or "")
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        refused = ready.json()["config_refused"]
        assert refused["version"] == number
        assert "DESKBELL_TEST_SURELY_UNSET_VAR" in refused["reason"]
        sales = {**BODY, "topic": "sales"}
        assert (await client.post(URL, json=sales)).status_code == 202  # still version 1
        # Rolled back: the node runs it and is no longer refusing anything.
        rollback = await a.store.config.activate(1, author="test")
        await b.live.sync()
        assert b.live.number == rollback.number
        assert "config_refused" not in (await client.get("/readyz")).json()


async def test_a_restart_with_the_same_file_keeps_a_later_api_version(
    node: Callable[..., Any], tmp_path: Path
) -> None:
    async with node() as (a, _):
        number = await store_version(a, SECOND)
    async with node(FIRST) as (again, client):
        assert [v.number for v in await again.store.config.list()] == [number, 1]
        assert again.live.number == number
        assert (await client.post(URL, json=BODY)).status_code == 202


async def test_an_edited_file_at_start_becomes_the_active_version(
    node: Callable[..., Any],
) -> None:
    async with node() as (a, _):
        await store_version(a, SECOND)
    async with node(FIRST.replace("sales", "refunds")) as (again, _):
        active = await again.store.config.active()
        assert active is not None
        assert (active.number, active.origin) == (3, "file")
        assert again.live.number == 3


async def test_nodes_starting_at_once_store_the_file_once(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "deskbell.yaml"
    path.write_text(FIRST)
    runtime = build_runtime(Settings(database_url=database_url, config=path), console=io.StringIO())
    try:
        results = await asyncio.gather(
            *(
                adopt_file(
                    runtime.store.config,
                    FIRST,
                    author=f"file:{i}",
                    registry=runtime.registry,
                    secret_key=None,
                )
                for i in range(4)
            )
        )
        assert {r.number for r in results if r is not None} == {1}
        assert len(await runtime.store.config.list()) == 1
    finally:
        await runtime.aclose()


async def test_sighup_reload_keeps_the_old_config_when_the_file_is_invalid(
    node: Callable[..., Any], tmp_path: Path
) -> None:
    async with node() as (runtime, client):
        path = runtime.settings.config
        path.write_text("channels: {x: {type: nope}}\n")
        assert await runtime.live.reload() is None
        assert runtime.live.number == 1
        assert len(await runtime.store.config.list()) == 1
        path.write_text(SECOND)
        stored = await runtime.live.reload()
        assert stored is not None
        assert (stored.number, stored.origin) == (2, "file")
        assert runtime.live.number == 2
        assert (await client.post(URL, json=BODY)).status_code == 202


async def test_a_changed_channel_gets_a_new_breaker_and_an_unchanged_one_keeps_it(
    node: Callable[..., Any],
) -> None:
    async with node() as (a, _), node() as (b, _):
        circuits = Circuits()
        now = b.clock.now()
        circuits.room(b.channels(), {}, now)
        console, other = circuits.get("console"), circuits.get("other")
        await store_version(a, SECOND)  # `other` changes, `console` does not
        await b.live.sync()
        circuits.room(b.channels(), {}, now)
        assert circuits.get("console") is console
        assert circuits.get("other") is not other


class ClosableSettings(ChannelSettings):
    type: Literal["closable"]


class Closable:
    """A channel holding something to close (as a client with its own pool would)."""

    def __init__(self, name: str, settings: ClosableSettings, ctx: ChannelContext) -> None:
        self.name = name
        self.closed = False

    async def send(self, message: Message) -> SendResult:
        return SendResult.sent()

    async def aclose(self) -> None:
        self.closed = True


CLOSABLE = ChannelType(name="closable", settings_model=ClosableSettings, factory=Closable)
WITH_CLOSABLE = """
channels:
  held:
    type: closable
    timeout: 0.1
routes:
  - match: {topic: sales}
    to: [held]
default: reject
"""


async def test_a_replaced_channel_object_is_closed_once_no_send_can_use_it(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "deskbell.yaml"
    path.write_text(WITH_CLOSABLE)
    settings = Settings(database_url=database_url, config=path)
    runtime = build_runtime(settings, extra_channel_types=[CLOSABLE], console=io.StringIO())
    async with running_app(runtime, start_workers=False):
        old = runtime.active.channels["held"][0]
        assert isinstance(old, Closable)
        await store_version(runtime, WITH_CLOSABLE.replace("0.1", "0.2"))
        await runtime.live.sync()
        assert runtime.active.channels["held"][0] is not old
        assert not old.closed  # a send started before the switch may still use it
        await wait_until_async(lambda: old.closed, what="the old object to be closed")


async def test_without_a_file_or_any_version_the_demo_is_version_1(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./deskbell.yaml here
    runtime = build_runtime(Settings(database_url=database_url), console=io.StringIO())
    async with running_app(runtime, start_workers=False) as client:
        [version] = await runtime.store.config.list()
        assert (version.number, version.origin, version.author) == (1, "file", "built-in demo")
        assert (await client.get("/readyz")).json()["config_version"] == 1
