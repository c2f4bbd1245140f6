"""Replay of a dead delivery (`POST /v1/deliveries/{id}/retry`, `deskbell retry`, both
`Store.retry_dead`): a fresh retry budget, attempts still numbered in one sequence, and a
fallback already sent is not sent again. Both engines; the worker test runs a real worker
against a local Slack fake."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deskbell.api.schemas import overall_status
from deskbell.channels.base import RetryConfig, SendResult
from deskbell.cli import app as cli
from deskbell.delivery.dispatch import next_status
from deskbell.models import AssistanceRequestIn, AttemptResult, Claimed, DeliveryStatus, Outcome
from deskbell.routing.router import Target
from deskbell.storage.engine import connect
from deskbell.storage.store import Storage
from deskbell.wiring import Runtime
from tests.conftest import ENGINES, fresh_database, running_app, wait_for_request
from tests.fakes.slack import FakeSlack
from tests.ledger import attempts_of, record_attempt

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def req() -> AssistanceRequestIn:
    return AssistanceRequestIn(topic="sales", description="help")


def dead(at: datetime) -> AttemptResult:
    return AttemptResult(
        outcome=Outcome.PERMANENT,
        status=DeliveryStatus.DEAD,
        started_at=at,
        finished_at=at + timedelta(seconds=1),
        error="no_service",
    )


def sent(at: datetime) -> AttemptResult:
    return AttemptResult(
        outcome=Outcome.SENT, status=DeliveryStatus.SENT, started_at=at, finished_at=at
    )


async def one(store: Storage, at: datetime, channel: str | None = None) -> Claimed:
    claimed = await store.queue.claim("w", at, lease=LEASE, limit=10)
    (found,) = [c for c in claimed if channel is None or c.delivery.channel == channel]
    return found


async def test_replay_counts_the_budget_from_the_replay(store: Storage) -> None:
    stored, _ = await store.requests.accept_one(req(), [Target("a")], T0)
    policy = RetryConfig(max_attempts=3, max_age=3600)
    settings = type("S", (), {"retry": policy})()  # what next_status reads of the settings
    at = T0
    for _ in range(3):
        claimed = await one(store, at)
        status, next_at = next_status(claimed, SendResult.transient("503"), settings, at)  # type: ignore[arg-type]
        result = AttemptResult(Outcome.TRANSIENT, status, at, at, "503", next_at)
        assert await record_attempt(store, claimed, result)
        at = next_at or at
    assert status is DeliveryStatus.DEAD  # three attempts spent
    later = T0 + timedelta(days=2)  # past max_age too
    revived = await store.queue.retry_dead(stored.deliveries[0].id, later)
    assert (revived.status, revived.attempts) == (DeliveryStatus.PENDING, 3)
    claimed = await one(store, later)
    assert (claimed.delivery.attempts, claimed.budget_attempts) == (4, 1)
    assert claimed.budget_since == later
    status, next_at = next_status(claimed, SendResult.transient("503"), settings, later)  # type: ignore[arg-type]
    assert status is DeliveryStatus.RETRYING  # before: dead at once (4 >= 3, and 2 days old)
    assert await record_attempt(
        store, claimed, AttemptResult(Outcome.TRANSIENT, status, later, later, "503", next_at)
    )
    assert [a.number for a in await attempts_of(store, claimed.delivery.id)] == [1, 2, 3, 4]


async def test_a_replayed_delivery_given_back_unsent_is_pending(store: Storage) -> None:
    await store.requests.accept_one(req(), [Target("a")], T0)
    claimed = await one(store, T0)
    await record_attempt(store, claimed, dead(T0))
    await store.queue.retry_dead(claimed.delivery.id, T0)
    again = await one(store, T0)
    assert await store.queue.release_many([again], T0)
    delivery = await store.reads.get_delivery(again.delivery.id)
    assert delivery is not None
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 1)


async def test_a_sent_fallback_is_not_sent_again(store: Storage) -> None:
    stored, _ = await store.requests.accept_one(req(), [Target("slack", fallback="mail")], T0)
    slack = await one(store, T0)
    await record_attempt(store, slack, dead(T0))
    mail = await one(store, T0 + timedelta(minutes=1), "mail")
    await record_attempt(store, mail, sent(T0))
    loaded = await store.reads.get_request(stored.id)
    assert loaded is not None
    assert overall_status(loaded.deliveries) == "sent"  # dead, but covered by its fallback
    await store.queue.retry_dead(slack.delivery.id, T0 + timedelta(hours=1))
    loaded = await store.reads.get_request(stored.id)
    assert loaded is not None
    assert overall_status(loaded.deliveries) == "pending"
    replayed = await one(store, T0 + timedelta(hours=1))
    assert replayed.delivery.channel == "slack"
    await record_attempt(store, replayed, dead(T0 + timedelta(hours=1)))
    loaded = await store.reads.get_request(stored.id)
    assert loaded is not None
    assert [(d.channel, d.status) for d in loaded.deliveries] == [
        ("slack", DeliveryStatus.DEAD),
        ("mail", DeliveryStatus.SENT),
    ]
    assert overall_status(loaded.deliveries) == "sent"
    assert await store.queue.claim("w", T0 + timedelta(days=1), lease=LEASE, limit=10) == []


async def test_a_pending_fallback_is_not_doubled(store: Storage) -> None:
    """The replayed delivery dies again while its first fallback still waits: still one."""
    stored, _ = await store.requests.accept_one(req(), [Target("slack", fallback="mail")], T0)
    await record_attempt(store, slack := await one(store, T0), dead(T0))
    await store.queue.retry_dead(slack.delivery.id, T0)
    claimed = await store.queue.claim("w", T0, lease=LEASE, limit=10, room={"mail": 0})
    (again,) = claimed
    await record_attempt(store, again, dead(T0))
    loaded = await store.reads.get_request(stored.id)
    assert loaded is not None
    assert [d.channel for d in loaded.deliveries] == ["slack", "mail"]
    assert overall_status(loaded.deliveries) == "pending"


@pytest.mark.parametrize("engine", ENGINES)
async def test_deskbell_retry_gives_the_same_fresh_budget(engine: str, tmp_path: Path) -> None:
    """`deskbell retry` calls the same `Store.retry_dead`: budget counted from the replay."""
    async with fresh_database(engine, tmp_path) as url:
        db = connect(url)
        store = Storage.open(db)
        try:
            await store.requests.accept_one(req(), [Target("a")], T0)
            claimed = await one(store, T0)
            await record_attempt(store, claimed, dead(T0))
            env = {"DESKBELL_DATABASE_URL": url}
            root = logging.getLogger()
            handlers, level = root.handlers[:], root.level
            try:  # the CLI runs its own event loop: in a thread of its own
                done = await asyncio.to_thread(
                    CliRunner().invoke, cli, ["retry", claimed.delivery.id], env=env
                )
                refused = await asyncio.to_thread(
                    CliRunner().invoke, cli, ["retry", "x\x00"], env=env
                )
            finally:  # commands point the root logger at the runner's stream, closed after
                root.handlers[:] = handlers
                root.setLevel(level)
            assert done.exit_code == 0, done.output
            assert refused.exit_code == 1, refused.output
            again = await one(store, datetime.now(UTC))
            assert (again.delivery.attempts, again.budget_attempts) == (2, 1)
        finally:
            await db.dispose()


async def test_replay_refuses_what_is_not_dead(store: Storage) -> None:
    from deskbell.errors import InvalidState, NotFound

    await store.requests.accept_one(req(), [Target("a")], T0)
    claimed = await one(store, T0)
    with pytest.raises(InvalidState):
        await store.queue.retry_dead(claimed.delivery.id, T0)
    for missing in ("missing", "x\x00", "01a20e96-a158-7083-9904-12079b6f92ed"):
        with pytest.raises(NotFound):
            await store.queue.retry_dead(missing, T0)


CONFIG = """
channels:
  sales-slack:
    type: slack
    webhook_url: {url}
    retry: {{max_attempts: 2, initial: 0.01, max: 0.02}}
  ops-console:
    type: console
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
    fallback: ops-console
"""


@pytest.mark.parametrize("engine", ENGINES)
async def test_replay_over_http_gets_a_fresh_budget_and_no_second_fallback(
    engine: str, tmp_path: Path, make_runtime: Callable[..., Runtime], fake_slack: FakeSlack
) -> None:
    fake_slack.reply_with(503)
    (tmp_path / engine).mkdir()
    async with fresh_database(engine, tmp_path / engine) as url:
        runtime = make_runtime(CONFIG.format(url=fake_slack.url), url=url)
        async with running_app(runtime) as client:
            answer = await client.post(
                "/v1/assistance-requests", json={"topic": "sales", "description": "help"}
            )
            request_id = answer.json()["id"]
            slack_id = answer.json()["deliveries"][0]["id"]

            def settled(stored: object) -> bool:
                return overall_status(stored.deliveries) != "pending"  # type: ignore[attr-defined]

            await wait_for_request(runtime, request_id, settled)
            body = (await client.get(f"/v1/assistance-requests/{request_id}")).json()
            assert body["status"] == "sent"  # the slack delivery is dead, the console has it
            assert [(d["channel"], d["status"]) for d in body["deliveries"]] == [
                ("sales-slack", "dead"),
                ("ops-console", "sent"),
            ]
            assert len(fake_slack.requests) == 2
            retried = await client.post(f"/v1/deliveries/{slack_id}/retry")
            assert retried.status_code == 202
            assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 2)
            await wait_for_request(runtime, request_id, settled)
            await wait_for_request(
                runtime,
                request_id,
                lambda s: s.deliveries[0].status is DeliveryStatus.DEAD,
                what="the replayed delivery dead again",
            )
            body = (await client.get(f"/v1/assistance-requests/{request_id}")).json()
            numbers = [a.number for a in await attempts_of(runtime.store, slack_id)]
        assert len(fake_slack.requests) == 4  # two more attempts: a fresh budget of 2
        assert numbers == [1, 2, 3, 4]
        assert [(d["channel"], d["status"]) for d in body["deliveries"]] == [
            ("sales-slack", "dead"),
            ("ops-console", "sent"),
        ]
        assert (body["status"], body["deliveries"][0]["attempts"]) == ("sent", 4)
