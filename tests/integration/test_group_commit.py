"""Group commit under concurrency, on both engines (SQLite's writer thread, PostgreSQL's async
engine): every 202 is stored, and when a batch's commit fails, every request in it gets 503
and none of them is stored. The failure is real: a trigger aborts the insert of one poisoned
row, which fails the whole transaction it is in."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import DBAPIError

from deskbell.errors import ShuttingDown
from deskbell.models import NO_TRACE, AssistanceRequestIn, Receipt, RequestTrace
from deskbell.routing.router import Target
from deskbell.storage.batcher import Batcher
from deskbell.storage.ingest import ingest_batcher
from deskbell.storage.rows import ROWS_PER_STATEMENT, NewRequest, NewRows
from deskbell.storage.sqlite_ingest import sqlite_file
from deskbell.storage.tables import metadata, requests
from deskbell.wiring import Runtime
from tests.conftest import running_app

URL = "/v1/assistance-requests"
POISON = {
    "sqlite": [
        """CREATE TRIGGER poison BEFORE INSERT ON requests
        WHEN json_extract(NEW.payload, '$.description') = 'poison'
        BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"""
    ],
    "postgresql": [
        """CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.payload->>'description' = 'poison' THEN RAISE EXCEPTION 'poisoned row'; END IF;
            RETURN NEW;
        END $$""",
        """CREATE TRIGGER poison BEFORE INSERT ON requests
        FOR EACH ROW EXECUTE FUNCTION poison()""",
    ],
}


def sqlite_writer(path: Path, now: Callable[[], datetime]) -> Batcher[NewRequest, None]:
    """The group commit of a SQLite file on its own, without a runtime."""
    return ingest_batcher(None, now, path=str(path))


async def accept(
    writer: Batcher[NewRequest, None],
    payload: AssistanceRequestIn,
    targets: list[Target],
    trace: RequestTrace = NO_TRACE,
) -> Receipt:
    new = NewRequest.of(payload, targets, trace)
    await writer.submit(new)
    return new.receipt()


async def stored_ids(runtime: Runtime) -> set[str]:
    async with runtime.db.reader.connect() as conn:
        return set((await conn.execute(sa.select(requests.c.id))).scalars())


async def test_concurrent_ingest_shares_commits_and_loses_nothing(
    make_runtime: Callable[..., Runtime], database_url: str
) -> None:
    runtime = make_runtime(url=database_url)
    async with runtime.db.writer.begin() as conn:
        for statement in POISON[conn.dialect.name]:
            await conn.execute(sa.text(statement))
    async with running_app(runtime, start_workers=False) as client:

        async def post(description: str) -> httpx.Response:
            body = {"topic": "sales", "description": description}
            return await client.post(URL, json=body)

        descriptions = [f"ok-{i}" for i in range(200)]
        descriptions[100] = "poison"
        answers = await asyncio.gather(*(post(d) for d in descriptions))
        stored = await stored_ids(runtime)

    statuses = Counter(a.status_code for a in answers)
    accepted = {a.json()["id"] for a in answers if a.status_code == 202}
    refused = [a for a in answers if a.status_code != 202]
    assert set(statuses) <= {202, 503}
    assert answers[100].status_code == 503  # the poisoned request itself
    assert all(a.json()["error"]["code"] == "database_unavailable" for a in refused)
    assert stored == accepted  # every 202 is stored, and nothing else is
    assert len(accepted) == 200 - len(refused)
    assert len(refused) >= 1


async def test_group_commit_batches_concurrent_requests(
    make_runtime: Callable[..., Runtime], database_url: str
) -> None:
    runtime = make_runtime(url=database_url)
    async with running_app(runtime, start_workers=False) as client:
        answers = await asyncio.gather(
            *(client.post(URL, json={"topic": "sales", "description": f"r{i}"}) for i in range(100))
        )
        batches, committed = runtime.ingest.batches, runtime.ingest.committed
    assert all(a.status_code == 202 for a in answers)
    assert committed == 100
    assert batches < 100  # requests shared transactions


async def test_rows_written_through_the_driver_read_back_and_claim(
    make_runtime: Callable[..., Runtime], database_url: str
) -> None:
    """The group commit bypasses SQLAlchemy's per-row type processing: what it stores must be
    what the rest of the store reads (tz-aware timestamps, JSON payload) and what the claim
    query compares against (`next_attempt_at <= now`)."""
    runtime = make_runtime(
        url=database_url,
        config=(
            "channels:\n  c: {type: console}\n  d: {type: console}\n"
            "routes:\n  - match: {topic: sales}\n    to: [c]\n    fallback: d\n"
        ),
    )
    payload = AssistanceRequestIn(
        topic="sales", description="Wants a quote", metadata={"plan": "pro", "seats": 40}
    )
    before = runtime.clock.now()
    receipt = await runtime.ingest.accept(payload, runtime.active.router.targets(payload))
    stored = await runtime.store.reads.get_request(receipt.id)
    claimed = await runtime.store.queue.claim(
        "test", runtime.clock.now(), lease=timedelta(seconds=30), limit=10
    )
    await runtime.aclose()

    assert stored is not None
    assert stored.payload == payload
    assert before <= stored.created_at <= before + timedelta(seconds=30)
    assert stored.created_at.tzinfo is not None
    assert [(d.id, d.channel, d.status) for d in stored.deliveries] == [
        (d.id, d.channel, d.status) for d in receipt.deliveries
    ]
    assert [c.delivery.id for c in claimed] == [receipt.deliveries[0].id]


def test_only_sqlite_files_get_the_writer_thread() -> None:
    assert sqlite_file("sqlite+aiosqlite:////var/lib/deskbell/deskbell.db") == (
        "/var/lib/deskbell/deskbell.db"
    )
    assert sqlite_file("sqlite+aiosqlite:///deskbell.db") == "deskbell.db"
    assert sqlite_file("sqlite+aiosqlite://") is None
    assert sqlite_file("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_file("postgresql+asyncpg://postgres@127.0.0.1/test") is None


async def test_timestamps_are_stored_as_sqlalchemy_writes_them(
    make_runtime: Callable[..., Runtime],
) -> None:
    """SQLite keeps timestamps as text and the claim compares them as text, so the group
    commit must write SQLAlchemy's exact format, microseconds included when they are zero
    (the sqlite3 module's own datetime adapter drops them, and is deprecated)."""
    runtime = make_runtime()
    runtime.ingest.now = lambda: datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)  # type: ignore[misc]
    payload = AssistanceRequestIn(topic="sales", description="x")
    receipt = await runtime.ingest.accept(payload, runtime.active.router.targets(payload))
    async with runtime.db.reader.connect() as conn:
        stored = (
            await conn.execute(
                sa.text("SELECT created_at FROM requests WHERE id = :id"), {"id": receipt.id}
            )
        ).scalar_one()
        due = (
            await conn.execute(
                sa.text("SELECT next_attempt_at FROM deliveries WHERE request_id = :id"),
                {"id": receipt.id},
            )
        ).scalar_one()
    await runtime.aclose()
    assert stored == due == "2026-01-01 12:00:00.000000"


async def test_a_database_the_writer_cannot_open_fails_each_batch_and_recovers(
    tmp_path: Path,
) -> None:
    """The writer thread opens its connection with the first batch. If it cannot, that batch
    gets the error (the API answers 503) instead of waiting forever, and a later batch tries
    again and commits once the database is there."""
    path = tmp_path / "not-yet" / "deskbell.db"
    writer = sqlite_writer(path, lambda: datetime.now(UTC))
    payload = AssistanceRequestIn(topic="sales", description="x")
    targets = [Target("console")]
    with pytest.raises(DBAPIError, match="unable to open database file"):
        await asyncio.wait_for(accept(writer, payload, targets), timeout=10)

    path.parent.mkdir()
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    receipt = await asyncio.wait_for(accept(writer, payload, targets), timeout=10)
    await writer.aclose()
    with engine.connect() as conn:
        stored = conn.execute(sa.select(requests.c.id)).scalars().all()
    engine.dispose()
    assert stored == [receipt.id]
    assert (writer.batches, writer.committed) == (1, 1)
    with pytest.raises(ShuttingDown):
        await accept(writer, payload, targets)


def test_a_batch_is_inserted_in_statements_of_at_most_64_rows() -> None:
    """SQLite's INSERTs are compiled from the table for each row count: values every row
    shares are bound once per statement, a missing one as '' through NULLIF."""
    rows = NewRows(sqlite.dialect())
    shared = rows.shared(datetime(2026, 1, 1, tzinfo=UTC))
    own = [(f"d{i}", "r", "console", "", "") for i in range(130)]
    statements = list(rows.deliveries.statements(shared, own))
    width = len(own[0])
    assert [len(parameters) for _, parameters in statements] == [
        4 + 64 * width,
        4 + 64 * width,
        4 + 2 * width,
    ]
    sql, parameters = statements[2]
    assert sql.startswith("INSERT INTO deliveries (id, request_id, channel, status, attempts,")
    assert sql.count("VALUES") == 1
    assert sql.count("nullif(") == 4  # fallback_channel and fallback_of, in each of 2 rows
    assert parameters.count("d128") == parameters.count("d129") == 1
    assert statements[0][0].count("), (") == ROWS_PER_STATEMENT - 1


@pytest.mark.parametrize("n", [1, 2, 5, ROWS_PER_STATEMENT])
def test_sqlites_n_row_inserts_store_what_sqlalchemys_compiled_ones_store(n: int) -> None:
    """The writer's INSERTs are written from the one-row statement (`RowInsert.pooled`) and
    bound from the pool as it is; SQLAlchemy's compiled n-row statements, bound through their
    getter, store the very same rows, in each of the three INSERTs."""
    rows = NewRows(sqlite.dialect())
    shared = rows.shared(datetime(2026, 1, 1, tzinfo=UTC))
    own = {
        "requests": [(f"r{i}", "sales", "{}", "", f"h{i}", "", "tp", "", "") for i in range(n)],
        "deliveries": [(f"d{i}", f"r{i}", "c", "" if i % 2 else "fb", "") for i in range(n)],
        "extras": [
            (f"e{i}", f"r{i}", "c", f"2026-0{i % 9 + 1}", "", "escalation", i, "", "")
            for i in range(n)
        ],
    }
    stored = []
    for pooled in (True, False):
        engine = sa.create_engine("sqlite://")
        metadata.create_all(engine)
        conn = engine.raw_connection()
        for insert in (rows.requests, rows.deliveries, rows.extras):
            name = "extras" if insert is rows.extras else insert.table.name
            if pooled:
                ((sql, parameters),) = insert.statements(shared, own[name])
            else:
                pool = [*shared, *(value for row in own[name] for value in row)]
                sql, getter = insert.compiled(n)
                parameters = getter(pool)
            conn.execute(sql, parameters)
        stored.append(
            [
                sorted(conn.execute(f"SELECT * FROM {table}").fetchall(), key=str)
                for table in ("requests", "deliveries")
            ]
        )
        conn.close()
        engine.dispose()
    assert stored[0] == stored[1]
    assert len(stored[0][0]) == n
    assert len(stored[0][1]) == 2 * n


async def test_nullable_values_are_stored_as_null_and_the_timestamp_in_every_column(
    tmp_path: Path,
) -> None:
    """The writer binds a missing request id, traceparent or fallback as '' and the batch's
    timestamp once per statement: stored are NULLs, the values given, and one timestamp in
    every timestamp column."""
    path = tmp_path / "deskbell.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    writer = sqlite_writer(path, lambda: datetime(2026, 1, 1, 12, tzinfo=UTC))
    payload = AssistanceRequestIn(topic="sales", description="x")
    traced, untraced = await asyncio.gather(
        accept(writer, payload, [Target("console", "email")], RequestTrace("r1", "00-ab-cd-01")),
        accept(writer, payload, [Target("console")], RequestTrace(None, None)),
    )
    await writer.aclose()
    with engine.connect() as conn:
        stored = {
            row.id: row
            for row in conn.execute(
                sa.text(
                    "SELECT r.id, r.created_at, r.http_request_id, r.traceparent,"
                    " d.channel, d.fallback_channel, d.status, d.attempts,"
                    " d.created_at AS d_created, d.updated_at, d.next_attempt_at"
                    " FROM requests r JOIN deliveries d ON d.request_id = r.id"
                )
            )
        }
    engine.dispose()
    stamp = "2026-01-01 12:00:00.000000"
    assert tuple(stored[traced.id])[1:] == (
        stamp, "r1", "00-ab-cd-01", "console", "email", "pending", 0, stamp, stamp, stamp
    )  # fmt: skip
    assert tuple(stored[untraced.id])[1:] == (
        stamp, None, None, "console", None, "pending", 0, stamp, stamp, stamp
    )  # fmt: skip


async def test_a_batch_larger_than_one_statement_is_stored_whole(tmp_path: Path) -> None:
    """While another connection holds the write lock, requests pile up; the batches that
    commit once it is released hold more rows than one INSERT takes."""
    path = tmp_path / "deskbell.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    metadata.create_all(engine)
    # In WAL mode, as every database deskbell makes is: switching a file to WAL needs it
    # unlocked, so the writer's first connect would fail while the blocker holds it.
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    writer = sqlite_writer(path, lambda: datetime.now(UTC))
    payload = AssistanceRequestIn(topic="sales", description="x")
    targets = [Target("console"), Target("email")]
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    tasks = [asyncio.create_task(accept(writer, payload, targets)) for _ in range(150)]
    # One turn of the loop: the tasks, scheduled first, each run to the point where their
    # request is handed to the writer and they wait for its commit.
    await asyncio.sleep(0)
    blocker.execute("ROLLBACK")
    blocker.close()
    receipts = await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    await writer.aclose()
    with engine.connect() as conn:
        stored = set(conn.execute(sa.select(requests.c.id)).scalars())
        delivery_count = conn.execute(sa.text("SELECT count(*) FROM deliveries")).scalar_one()
    engine.dispose()
    assert stored == {r.id for r in receipts}
    assert len(stored) == 150
    assert delivery_count == 300
    # Whatever the first batch took before the lock stopped it, the rest waited and went in
    # one more: some batch held more requests (and rows per table) than one INSERT takes.
    assert (writer.committed, writer.batches) in {(150, 1), (150, 2)}
