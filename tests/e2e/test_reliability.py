"""A 202 is a promise: real deskbell processes, killed for real, on SQLite and PostgreSQL.
Nothing here mocks the store or the clock."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from deskbell.models import DeliveryStatus, Outcome
from deskbell.storage.engine import connect
from deskbell.storage.store import Store
from deskbell.storage.tables import attempts, deliveries
from tests.fakes import wait_until_async, wait_until_true
from tests.fakes.slack import FakeSlack
from tests.process import Deskbell, free_port, post_many

MARK = re.compile(r"req-(\d{5})")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Store]:
    database = connect(database_url)
    yield Store(database)
    await database.dispose()


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def slack_config(slack: FakeSlack, **channel: object) -> str:
    extra = "".join(f"\n    {key}: {value}" for key, value in channel.items())
    return f"""
channels:
  sales-slack:
    type: slack
    webhook_url: {slack.url}{extra}
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
"""


def start(tmp_path: Path, database_url: str, config: str, *args: str, **env: str) -> Deskbell:
    path = tmp_path / f"deskbell-{len(list(tmp_path.glob('*.yaml')))}.yaml"
    path.write_text(config)
    settings = {
        "DESKBELL_DATABASE_URL": database_url,
        "DESKBELL_CONFIG": str(path),
        "DESKBELL_LOG_FORMAT": "json",
        "DESKBELL_POLL_SECONDS": "0.2",
        **{f"DESKBELL_{k.upper()}": v for k, v in env.items()},
    }
    api = "serve" in args or not args
    return Deskbell(
        args or ("serve",), env=settings, workdir=tmp_path, port=free_port() if api else None
    ).wait_ready()


def requests(n: int) -> list[dict[str, object]]:
    return [{"topic": "sales", "description": f"req-{i:05d}"} for i in range(n)]


async def count(db: Store, status: DeliveryStatus) -> int:
    return sum(n for (_, s), n in (await db.delivery_counts()).items() if s is status)


def received(slack: FakeSlack) -> Counter[str]:
    return Counter(m.group(0) for p in slack.payloads if (m := MARK.search(p["text"])))


async def test_sigkill_mid_delivery_loses_nothing(
    tmp_path: Path, database_url: str, db: Store, slack: FakeSlack
) -> None:
    slack.delay = 0.2
    config = slack_config(slack, max_concurrency=20, timeout=5)
    env = {"workers": "20", "lease_seconds": "2"}
    server = start(tmp_path, database_url, config, **env)
    ids = await post_many(server.url, requests(500))
    assert len(set(ids)) == 500
    await wait_until_async(lambda: len(slack.payloads) >= 100, timeout=60, what="100 delivered")
    server.kill()
    in_flight_at_kill = await count(db, DeliveryStatus.IN_FLIGHT)
    assert in_flight_at_kill > 0, "the kill must land while deliveries are in flight"

    restarted = start(tmp_path, database_url, config, **env)
    try:

        async def all_sent() -> bool:
            return await count(db, DeliveryStatus.SENT) == 500

        await wait_until_true(all_sent, timeout=90, what="all 500 sent after restart")
    finally:
        assert restarted.terminate() == 0
    seen = received(slack)
    lost = 500 - len(seen)
    duplicates = sum(seen.values()) - len(seen)
    print(f"kill test: lost={lost} duplicates={duplicates} in_flight_at_kill={in_flight_at_kill}")
    assert lost == 0
    assert duplicates <= in_flight_at_kill


async def test_many_workers_on_postgres_share_the_work(
    tmp_path: Path, postgres_url: str, slack: FakeSlack
) -> None:
    slack.delay = 0.02
    database = connect(postgres_url)
    db = Store(database)
    config = slack_config(slack, max_concurrency=16)
    env = {"workers": "16", "lease_seconds": "3"}
    api = start(tmp_path, postgres_url, config, "serve", "--no-workers", **env)
    workers = [start(tmp_path, postgres_url, config, "worker", **env) for _ in range(3)]
    try:
        bodies = requests(2000)
        ids = await post_many(api.url, bodies, concurrency=32)
        mark_of = {
            request_id: body["description"] for request_id, body in zip(ids, bodies, strict=False)
        }
        await wait_until_async(lambda: len(slack.payloads) >= 400, timeout=60, what="400 sent")
        victim = workers[0]
        victim.kill()
        async with database.reader.connect() as conn:
            held = {
                mark_of[request_id]
                for request_id in (
                    await conn.execute(
                        sa.select(deliveries.c.request_id).where(
                            deliveries.c.status == DeliveryStatus.IN_FLIGHT.value,
                            deliveries.c.lease_owner.like(f"%:{victim.pid}:%"),
                        )
                    )
                ).scalars()
            }

        async def all_sent() -> bool:
            return await count(db, DeliveryStatus.SENT) == 2000

        await wait_until_true(all_sent, timeout=120, what="all 2000 sent")
        async with database.reader.connect() as conn:
            workers_that_sent = (
                await conn.execute(
                    sa.select(sa.func.count(sa.distinct(attempts.c.worker))).where(
                        attempts.c.outcome == Outcome.SENT.value
                    )
                )
            ).scalar_one()
    finally:
        for process in (api, *workers[1:]):
            assert process.terminate() == 0
        await database.dispose()
    seen = received(slack)
    twice = {mark for mark, n in seen.items() if n > 1}
    print(f"many workers: held_by_killed={len(held)} sent_twice={len(twice)}")
    assert len(seen) == 2000
    assert twice <= held
    assert workers_that_sent == 3
