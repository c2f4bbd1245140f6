"""Config versions on real SQLite and PostgreSQL: numbering, the one active version, If-Match
(StaleVersion), rollback as a new version, writers from several nodes, NOTIFY."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from deskbell.config.document import digest
from deskbell.errors import NotFound, StaleVersion
from deskbell.models import AssistanceRequestIn
from deskbell.routing.router import Target
from deskbell.storage.config_versions import CONFIG_CHANNEL
from deskbell.storage.engine import connect
from deskbell.storage.store import Storage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
A = {"channels": {"c": {"type": "console"}}, "routes": [], "default": ["c"]}
B = {"channels": {"c": {"type": "console"}, "d": {"type": "console"}}, "default": ["c"]}


async def test_create_numbers_and_activates(store: Storage) -> None:
    assert await store.config.active_number() is None
    assert await store.config.active() is None
    one = await store.config.create(A, author="ana", origin="api", summary={"x": 1}, expected=0)
    two = await store.config.create(B, author="bob", origin="file", summary={})
    assert (one.number, two.number) == (1, 2)
    assert await store.config.active_number() == 2
    active = await store.config.active()
    assert active is not None
    assert (active.number, active.author, active.origin, active.active) == (2, "bob", "file", True)
    assert active.document == B
    assert active.digest == digest(B)
    got = await store.config.get(1)
    assert got is not None
    assert (got.document, got.summary, got.active) == (A, {"x": 1}, False)
    assert [v.number for v in await store.config.list()] == [2, 1]
    assert [v.number for v in await store.config.list(limit=1)] == [2]
    assert await store.config.get(3) is None


async def test_stale_expected_raises_and_stores_nothing(store: Storage) -> None:
    await store.config.create(A, author="a", origin="api", summary={})
    with pytest.raises(StaleVersion) as caught:
        await store.config.create(B, author="b", origin="api", summary={}, expected=0)
    assert (caught.value.expected, caught.value.active) == (0, 1)
    with pytest.raises(StaleVersion):
        await store.config.activate(1, author="b", expected=7)
    assert [v.number for v in await store.config.list()] == [1]


async def test_unless_unchanged_answers_the_active_version(store: Storage) -> None:
    one = await store.config.create(A, author="a", origin="file", summary={})
    same = await store.config.create(
        dict(reversed(A.items())), author="b", origin="file", summary={}, unless_unchanged=True
    )
    assert same.number == one.number
    assert [v.number for v in await store.config.list()] == [1]


async def test_activate_is_a_new_rollback_version(store: Storage) -> None:
    await store.config.create(A, author="a", origin="api", summary={})
    await store.config.create(B, author="a", origin="api", summary={})
    back = await store.config.activate(1, author="ops", expected=2)
    assert (back.number, back.origin, back.author, back.document) == (3, "rollback", "ops", A)
    assert back.summary["rollback_of"] == 1
    assert back.summary["channels"]["removed"] == ["d"]
    assert await store.config.active_number() == 3
    again = await store.config.activate(1, author="ops")  # its document is active: no-op
    assert again.number == 3
    with pytest.raises(NotFound):
        await store.config.activate(99, author="ops")


async def test_writers_on_two_nodes_never_both_win(database_url: str) -> None:
    """Two nodes (engines of their own) write with the same If-Match: exactly one wins. Without
    one, writes are serialised: distinct numbers, exactly one active."""
    nodes = [Storage.open(connect(database_url)) for _ in range(2)]
    try:
        await nodes[0].config.create(A, author="a", origin="api", summary={})
        for _ in range(5):
            expected = await nodes[0].config.active_number()
            results = await asyncio.gather(
                *(
                    node.config.create(
                        B if i else A, author=f"n{i}", origin="api", summary={}, expected=expected
                    )
                    for i, node in enumerate(nodes)
                ),
                return_exceptions=True,
            )
            assert sorted(type(r).__name__ for r in results) == ["ConfigVersion", "StaleVersion"]
        plain = await asyncio.gather(
            *(n.config.create(A, author="x", origin="api", summary={}) for n in nodes for _ in "ab")
        )
        numbers = sorted(v.number for v in plain)
        assert len(set(numbers)) == 4
        versions = await nodes[1].config.list()
        assert [v.active for v in versions].count(True) == 1
        assert versions[0].active
        assert versions[0].number == numbers[-1]
    finally:
        for node in nodes:
            await node.db.dispose()


async def test_channel_use_counts_unsettled_deliveries(store: Storage) -> None:
    request = AssistanceRequestIn(topic="sales", description="help")
    await store.requests.accept_one(request, [Target("gone", fallback="gone")], T0)
    await store.requests.accept_one(request, [Target("kept", fallback="gone")], T0)
    use = await store.config.channel_use("gone")
    assert (use.deliveries, use.fallbacks) == (1, 2)
    none = await store.config.channel_use("other")
    assert (none.deliveries, none.fallbacks) == (0, 0)


@pytest.mark.postgres
async def test_each_write_notifies_its_number(postgres_url: str) -> None:
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    listener = await asyncpg.connect(dsn)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(CONFIG_CHANNEL, lambda *args: heard.put_nowait(args[3]))
    store = Storage.open(connect(postgres_url))
    try:
        await store.config.create(A, author="a", origin="api", summary={})
        await store.config.create(B, author="a", origin="api", summary={})
        await store.config.activate(1, author="a")
        got = [await asyncio.wait_for(heard.get(), 10) for _ in range(3)]
        assert got == ["1", "2", "3"]
    finally:
        await listener.close()
        await store.db.dispose()
