"""Delivery end to end in one process: the real app and worker pool, a real database, the
fake Slack (HTTP) and a real SMTP server. Shows which Slack answers end `dead` and which
`retrying`, and that one failing channel never holds up another."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from deskbell.models import DeliveryStatus, Outcome, StoredRequest
from deskbell.wiring import Runtime
from tests.conftest import running_app, statuses, wait_for_request
from tests.fakes.slack import FakeSlack, Reply
from tests.fakes.smtp import FakeSMTP
from tests.ledger import attempts_of

URL = "/v1/assistance-requests"
OPEN = {DeliveryStatus.PENDING, DeliveryStatus.IN_FLIGHT}


@pytest.fixture
def slack(fake_slack: FakeSlack) -> FakeSlack:
    return fake_slack


@pytest.fixture
def smtp(fake_smtp: FakeSMTP) -> FakeSMTP:
    return fake_smtp


def config(slack: FakeSlack, smtp: FakeSMTP, *, initial: float = 0.05) -> str:
    return f"""
channels:
  sales-slack:
    type: slack
    webhook_url: {slack.url}
    timeout: 2
    retry: {{initial: {initial}, max: 0.2, max_attempts: 5}}
  pricing-email:
    type: email
    smtp_url: {smtp.url}
    from: deskbell@example.com
    to: [pricing@example.com]
  backup:
    type: console
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
    fallback: backup
  - match: {{topic: pricing}}
    to: [pricing-email]
"""


async def post(client: httpx.AsyncClient, topic: str, description: str = "help") -> str:
    answer = await client.post(URL, json={"topic": topic, "description": description})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def settled(stored: StoredRequest) -> bool:
    return all(d.status not in OPEN for d in stored.deliveries)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(200), DeliveryStatus.SENT),
        (Reply(400), DeliveryStatus.DEAD),
        (Reply(403), DeliveryStatus.DEAD),
        (Reply(404), DeliveryStatus.DEAD),
        (Reply(410), DeliveryStatus.DEAD),
        (Reply(429, retry_after=30), DeliveryStatus.RETRYING),
        (Reply(500), DeliveryStatus.RETRYING),
        (Reply(503), DeliveryStatus.RETRYING),
    ],
    ids=lambda v: str(v.status) if isinstance(v, Reply) else v.value,
)
async def test_slack_answer_decides_the_delivery_status(
    make_runtime: Callable[..., Runtime],
    slack: FakeSlack,
    smtp: FakeSMTP,
    reply: Reply,
    expected: DeliveryStatus,
) -> None:
    slack.reply_with(reply.status, retry_after=reply.retry_after)
    runtime = make_runtime(config(slack, smtp, initial=30))
    async with running_app(runtime) as client:
        request_id = await post(client, "sales")
        stored = await wait_for_request(
            runtime, request_id, lambda s: s.deliveries[0].status not in OPEN
        )
        delivery = stored.deliveries[0]
        (attempt,) = await attempts_of(runtime.store, delivery.id)
    assert delivery.status is expected
    assert delivery.attempts == 1
    if expected is DeliveryStatus.SENT:
        assert attempt.outcome is Outcome.SENT
        assert delivery.sent_at is not None
    else:
        assert delivery.last_error is not None
        assert str(reply.status) in delivery.last_error
        assert attempt.error == delivery.last_error
    if reply.retry_after:
        assert delivery.next_attempt_at is not None
        assert (delivery.next_attempt_at - attempt.started_at).total_seconds() >= 30


async def test_dead_slack_delivery_falls_back(
    make_runtime: Callable[..., Runtime], slack: FakeSlack, smtp: FakeSMTP
) -> None:
    slack.reply_with(404)
    runtime = make_runtime(config(slack, smtp))
    async with running_app(runtime) as client:
        request_id = await post(client, "sales")
        stored = await wait_for_request(
            runtime, request_id, lambda s: len(s.deliveries) == 2 and settled(s)
        )
    dead, fallback = stored.deliveries
    assert (dead.channel, dead.status) == ("sales-slack", DeliveryStatus.DEAD)
    assert (fallback.channel, fallback.status) == ("backup", DeliveryStatus.SENT)
    assert fallback.fallback_of == dead.id


async def test_slack_outage_delays_sales_but_not_pricing(
    make_runtime: Callable[..., Runtime], slack: FakeSlack, smtp: FakeSMTP, database_url: str
) -> None:
    slack.reply_with(503)
    runtime = make_runtime(config(slack, smtp, initial=0.05), url=database_url)
    async with running_app(runtime) as client:
        sales_id = await post(client, "sales", "Slack is down")
        pricing_id = await post(client, "pricing", "Discount?")
        pricing = await wait_for_request(runtime, pricing_id, settled, what="pricing sent")
        sales = await wait_for_request(
            runtime,
            sales_id,
            lambda s: (
                s.deliveries[0].attempts >= 2 and s.deliveries[0].status is DeliveryStatus.RETRYING
            ),
            what="sales retrying",
        )
        assert statuses(pricing) == {"pricing-email": DeliveryStatus.SENT}
        assert "503" in (sales.deliveries[0].last_error or "")
        (mail,) = smtp.messages
        assert "Discount?" in mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]

        slack.reply_with(200)  # Slack recovers: the retried delivery goes through
        sales = await wait_for_request(
            runtime,
            sales_id,
            lambda s: s.deliveries[0].status is DeliveryStatus.SENT,
            what="sales sent",
        )
        history = await attempts_of(runtime.store, sales.deliveries[0].id)
    assert statuses(sales) == {"sales-slack": DeliveryStatus.SENT}
    assert [a.outcome for a in history[:-1]] == [Outcome.TRANSIENT] * (len(history) - 1)
    assert history[-1].outcome is Outcome.SENT
    assert slack.payloads[-1]["text"]


async def test_many_requests_all_delivered_once(
    make_runtime: Callable[..., Runtime], slack: FakeSlack, smtp: FakeSMTP
) -> None:
    runtime = make_runtime(config(slack, smtp))
    async with running_app(runtime) as client:
        ids = [await post(client, "sales", f"request {i}") for i in range(40)]
        for request_id in ids:
            await wait_for_request(runtime, request_id, settled)
    assert len(slack.payloads) == 40
    texts = sorted(p["text"] for p in slack.payloads)
    assert all(any(f"request {i}" in t for t in texts) for i in range(40))


async def test_a_hanging_channel_queued_in_the_worker_does_not_hold_up_another(
    make_runtime: Callable[..., Runtime], slack: FakeSlack, smtp: FakeSMTP
) -> None:
    """Slack hangs with its `max_concurrency` (10) sending and twice that claimed and queued
    in the worker (more than its 16 slots): the queued ones cannot start, so they must not
    keep the worker from claiming and sending the email behind them."""
    slack.delay = 8.0  # every Slack answer waits; stop() cuts it short
    hanging = config(slack, smtp).replace(
        "    timeout: 2\n", "    timeout: 20\n    max_concurrency: 10\n", 1
    )
    runtime = make_runtime(hanging, workers=16)
    async with running_app(runtime) as client:
        sales = [await post(client, "sales", f"sale {i}") for i in range(30)]
        for request_id in sales:  # all claimed: 10 sending, 20 queued
            await wait_for_request(
                runtime,
                request_id,
                lambda s: s.deliveries[0].status is DeliveryStatus.IN_FLIGHT,
                what="sales claimed",
            )
        pricing_id = await post(client, "pricing", "Discount?")
        pricing = await wait_for_request(runtime, pricing_id, settled, what="pricing sent")
        assert statuses(pricing) == {"pricing-email": DeliveryStatus.SENT}
        assert len(slack.payloads) == 10  # Slack still holds its first ten, no more started
        slack.stop()
