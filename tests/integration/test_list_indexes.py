"""The migrations build the schema tables.py declares, and the filtered request list reads the
indexes of migration 0004 (bench/growth.py measures why: at 1M requests a filter that scans
`requests` takes seconds)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import event
from sqlalchemy.engine import Connection, make_url

from deskbell.models import AssistanceRequestIn, AttemptResult, DeliveryStatus, Outcome
from deskbell.routing.router import Target
from deskbell.storage.engine import Database, connect
from deskbell.storage.migrate import alembic_config, upgrade
from deskbell.storage.store import Storage
from deskbell.storage.tables import metadata
from tests.ledger import record_attempt

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def schema_diff(db: Database) -> list[Any]:
    def compare(connection: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))

    async with db.writer.connect() as conn:
        return await conn.run_sync(compare)


async def downgrade(db: Database, revision: str) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config(db.url)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with db.writer.begin() as conn:
        await conn.run_sync(run)


async def test_migrations_match_the_tables_and_0004_reverts(database_url: str) -> None:
    db = connect(database_url)
    try:
        assert await schema_diff(db) == []
        await downgrade(db, "0003")
        assert {d[1].name for d in await schema_diff(db) if d[0] == "add_index"} == {
            "ix_deliveries_status_request_id",  # 0004
            "ix_requests_topic_id",  # 0004
            "ix_config_versions_active",  # 0006
            "ix_requests_handoff_state_id",  # 0007
            "ix_deliveries_channel_due",  # 0008
        }
        await upgrade(db)
        assert await schema_diff(db) == []
    finally:
        await db.dispose()


def req(topic: str) -> AssistanceRequestIn:
    return AssistanceRequestIn(topic=topic, description="help")


async def test_status_filter_pages_newest_first_once_per_request(store: Storage) -> None:
    ids = []
    for i in range(7):  # two deliveries each, both pending: listed once
        stored, _ = await store.requests.accept_one(
            req("sales" if i % 2 == 0 else "pricing"),
            [Target("a"), Target("b")],
            T0 + timedelta(minutes=i),
        )
        ids.append(stored.id)
    newest_first = list(reversed(ids))
    pages: list[str] = []
    cursor = None
    for _ in range(4):
        page, cursor = await store.reads.list_requests(
            status=DeliveryStatus.PENDING, limit=2, cursor=cursor
        )
        pages += [s.id for s in page]
        if cursor is None:
            break
    assert pages == newest_first
    assert cursor is None
    sales, _ = await store.reads.list_requests(topic="sales", status=DeliveryStatus.PENDING)
    assert [s.id for s in sales] == [ids[6], ids[4], ids[2], ids[0]]
    assert all(len(s.deliveries) == 2 for s in sales)
    recent, _ = await store.reads.list_requests(
        status=DeliveryStatus.PENDING, since=T0 + timedelta(minutes=5)
    )
    assert [s.id for s in recent] == [ids[6], ids[5]]
    page, cursor = await store.reads.list_requests(topic="pricing", limit=2, cursor=ids[5])
    assert ([s.id for s in page], cursor) == ([ids[3], ids[1]], None)
    assert await store.reads.list_requests(status=DeliveryStatus.IN_FLIGHT) == ([], None)


async def test_status_filter_keeps_requests_with_any_delivery_in_it(store: Storage) -> None:
    stored, _ = await store.requests.accept_one(req("sales"), [Target("a"), Target("b")], T0)
    claimed = await store.queue.claim("w", T0, lease=timedelta(seconds=30), limit=1)
    await record_attempt(
        store, claimed[0], AttemptResult(Outcome.SENT, DeliveryStatus.SENT, T0, T0)
    )
    for status in (DeliveryStatus.SENT, DeliveryStatus.PENDING):
        page, _ = await store.reads.list_requests(status=status)
        assert [s.id for s in page] == [stored.id]
        assert sorted(d.status for d in page[0].deliveries) == ["pending", "sent"]


async def test_sqlite_plans_read_the_page_from_an_index(sqlite_url: str) -> None:
    """Each filtered list reads an index in id order; none scans `requests`."""
    db = connect(sqlite_url)
    store = Storage.open(db)
    seen: list[tuple[str, Any]] = []

    @event.listens_for(db.reader.sync_engine, "before_cursor_execute")
    def capture(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("SELECT REQUESTS"):
            seen.append((args[2], args[3]))

    cursor = "01a00000-0000-7000-8000-000000000000"  # a cursor is a request id (a UUID)
    filters: list[dict[str, Any]] = [
        {"status": DeliveryStatus.IN_FLIGHT},
        {"status": DeliveryStatus.DEAD, "cursor": cursor},
        {"status": DeliveryStatus.PENDING, "topic": "sales"},
        {"topic": "support"},
        {"topic": "support", "cursor": cursor},
    ]
    try:
        for kwargs in filters:
            await store.reads.list_requests(**kwargs)
    finally:
        await db.dispose()
    path = make_url(sqlite_url).database
    assert path is not None
    with sqlite3.connect(path) as raw:
        plans = [
            " | ".join(row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params))
            for sql, params in seen
        ]
    assert len(plans) == len(filters)
    for plan in plans:
        assert "SCAN requests" not in plan, plan
        assert "TEMP B-TREE" not in plan, plan
    for plan in plans[:3]:
        assert "ix_deliveries_status_request_id (status=?" in plan, plan
    for plan in plans[3:]:
        assert "ix_requests_topic_id (topic=?" in plan, plan
