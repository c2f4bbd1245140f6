"""A 202 is a promise: real deskbell processes, killed for real, on SQLite and PostgreSQL.
Nothing here mocks the store or the clock."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from deskbell.models import DeliveryStatus, Outcome
from deskbell.storage.engine import connect
from deskbell.storage.store import Storage
from deskbell.storage.tables import attempts, deliveries
from tests.fakes import wait_until_async, wait_until_true
from tests.fakes.slack import FakeSlack, Reply
from tests.fakes.smtp import FakeSMTP
from tests.ledger import Attempt, attempts_of, delivery_counts
from tests.process import Deskbell, free_port, post_many

MARK = re.compile(r"req-(\d{5})")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Storage]:
    database = connect(database_url)
    yield Storage.open(database)
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


async def count(db: Storage, status: DeliveryStatus) -> int:
    return sum(n for (_, s), n in (await delivery_counts(db)).items() if s is status)


def received(slack: FakeSlack) -> Counter[str]:
    return Counter(m.group(0) for p in slack.payloads if (m := MARK.search(p["text"])))


async def test_sigkill_mid_delivery_loses_nothing(
    tmp_path: Path, database_url: str, db: Storage, slack: FakeSlack
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
    db = Storage.open(database)
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


async def attempts_by_request(db: Storage, request_id: str) -> list[Attempt]:
    stored = await db.reads.get_request(request_id)
    assert stored is not None
    return [a for d in stored.deliveries for a in await attempts_of(db, d.id)]


async def test_outage_opens_the_breaker_and_recovery_closes_it(
    tmp_path: Path, database_url: str, db: Storage, slack: FakeSlack
) -> None:
    slack.reply_with(503)
    config = slack_config(
        slack,
        max_concurrency=1,
        breaker="{failures: 3, cool_down: 0.5}",
        retry="{initial: 0.1, max: 0.2, max_attempts: 100}",
    )
    server = start(tmp_path, database_url, config, log_level="debug")
    try:
        ids = await post_many(server.url, requests(5))
        await wait_until_async(
            lambda: '"event":"breaker_probe_failed"' in server.output(),
            timeout=30,
            what="the breaker to open, probe, and open again",
        )
        slack.reply_with(200)

        async def all_sent() -> bool:
            return await count(db, DeliveryStatus.SENT) == 5

        await wait_until_true(all_sent, timeout=30, what="all sent after recovery")
        history = [a for r in ids for a in await attempts_by_request(db, r)]
    finally:
        assert server.terminate() == 0
    log = server.output()
    failed = [a for a in history if a.outcome is Outcome.TRANSIENT]
    # While open, attempts fail fast without reaching Slack (and count toward the policy).
    refused = sorted(
        (a for a in failed if "(not sent)" not in (a.error or "")), key=lambda a: a.started_at
    )
    assert all(a.error and a.error.startswith("HTTP 503") for a in refused)
    assert len(refused) == sum(r.status == 503 for r in slack.requests)
    # 3 failures open it (logged once); then one probe per cool-down, a failed one reopening it
    probes = refused[3:]
    assert len(probes) == log.count('"event":"breaker_probe_failed"') >= 1
    gaps = [probes[i + 1].started_at - probes[i].started_at for i in range(len(probes) - 1)]
    assert all(gap.total_seconds() >= 0.5 for gap in gaps)
    assert log.count('"event":"breaker_opened"') == 1
    assert log.count('"event":"breaker_closed"') == 1
    assert sum(a.outcome is Outcome.SENT for a in history) == 5


async def test_retry_after_is_honoured(
    tmp_path: Path, database_url: str, db: Storage, slack: FakeSlack
) -> None:
    slack.reply_next(Reply(429, retry_after=2))
    config = slack_config(slack, retry="{initial: 0.05, max: 0.1}")
    server = start(tmp_path, database_url, config)
    try:
        (request_id,) = await post_many(server.url, requests(1))

        async def sent() -> bool:
            return await count(db, DeliveryStatus.SENT) == 1

        await wait_until_true(sent, timeout=20, what="sent after the 429")
        first, second = await attempts_by_request(db, request_id)
    finally:
        assert server.terminate() == 0
    assert first.outcome is Outcome.TRANSIENT
    assert second.outcome is Outcome.SENT
    first_done = first.started_at + timedelta(milliseconds=first.duration_ms)
    assert (second.started_at - first_done).total_seconds() >= 2.0


async def test_slow_channel_does_not_delay_email(
    tmp_path: Path, database_url: str, db: Storage, slack: FakeSlack
) -> None:
    slack.delay = 5
    with FakeSMTP() as smtp:
        config = (
            slack_config(slack, max_concurrency=4)
            + """
  - match: {topic: pricing}
    to: [pricing-email]
"""
        )
        config = config.replace(
            "routes:",
            f"""  pricing-email:
    type: email
    smtp_url: {smtp.url}
    from: deskbell@example.com
    to: [pricing@example.com]
routes:""",
        )
        server = start(tmp_path, database_url, config, shutdown_grace_seconds="0")
        try:
            await post_many(server.url, requests(8))  # more than the Slack channel may run
            await wait_until_async(
                lambda: len(slack.requests) >= 4, timeout=10, what="Slack slots full"
            )
            pricing = await post_many(
                server.url, [{"topic": "pricing", "description": f"p{i}"} for i in range(10)]
            )
            await smtp.wait_for_messages_async(10, timeout=10)

            async def all_recorded() -> bool:
                # A result is committed after its send ends (and in groups): the mail can be
                # in before its delivery reads `sent`.
                found = [await db.reads.get_request(r) for r in pricing]
                return all(r is not None and r.deliveries[0].sent_at for r in found)

            await wait_until_true(all_recorded, timeout=5, what="pricing results committed")
            stored = [await db.reads.get_request(r) for r in pricing]
        finally:
            assert server.terminate() == 0
    for request in stored:
        assert request is not None
        (delivery,) = request.deliveries
        assert delivery.status is DeliveryStatus.SENT
        assert delivery.sent_at is not None
        assert (delivery.sent_at - request.created_at).total_seconds() < 1.0


async def test_sigterm_lets_sends_finish_then_releases_the_rest(
    tmp_path: Path, database_url: str, db: Storage, slack: FakeSlack
) -> None:
    slack.delay = 1.0
    config = slack_config(slack, max_concurrency=2)
    server = start(tmp_path, database_url, config, shutdown_grace_seconds="3")
    ids = await post_many(server.url, requests(2))
    await wait_until_async(lambda: len(slack.requests) >= 2, timeout=10, what="both in flight")
    assert server.terminate() == 0  # within the grace: both sends finish
    assert await count(db, DeliveryStatus.SENT) == 2

    slack.delay = 30
    server = start(tmp_path, database_url, config, shutdown_grace_seconds="0.5")
    more = await post_many(server.url, requests(2))
    await wait_until_async(lambda: len(slack.requests) >= 4, timeout=10, what="in flight")
    assert server.terminate(timeout=15) == 0  # past the grace: cancelled and released
    for request_id in more:
        stored = await db.reads.get_request(request_id)
        assert stored is not None
        (delivery,) = stored.deliveries
        assert delivery.status is DeliveryStatus.PENDING
        assert delivery.attempts == 0
        assert delivery.lease_owner is None
    assert ids  # the first pair stays sent
