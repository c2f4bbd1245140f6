"""Telling the bot (SPEC §9): signed events to a source's callback_url, through the outbox.

The real app and worker pool on a real database; the bot is a local HTTP receiver and every
event it gets is checked with the `standardwebhooks` reference verifier. People's channels
are webhook channels to other local receivers.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import orjson
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook

from deskbell import handoff
from deskbell.api.webhooks import sign
from deskbell.channels.base import RetryConfig
from deskbell.config.schema import SourceConfig
from deskbell.delivery.callbacks import CALLBACK_SETTINGS, callback_channel
from deskbell.storage.tables import deliveries
from deskbell.wiring import Runtime
from tests.api.test_slack_interactions import SIGNING, click
from tests.api.test_slack_interactions import signed as slack_signed
from tests.conftest import running_app
from tests.fakes import wait_until_async
from tests.fakes.receiver import Received, Receiver
from tests.fakes.slack import FakeSlack

URL = "/v1/assistance-requests"
BOT_SECRET = "whsec_" + base64.b64encode(b"b" * 32).decode()  # the bot signs its requests
CALLBACK_SECRET = "whsec_" + base64.b64encode(b"c" * 32).decode()  # deskbell signs events
OTHER_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
PLAIN_SECRET = "whsec_" + base64.b64encode(b"p" * 32).decode()
API_KEY = "k" * 40
FAST = CALLBACK_SETTINGS.model_copy(
    update={"retry": RetryConfig(initial=0.05, max=0.1, max_attempts=4)}
)


def config(
    bot: Receiver, people: Receiver, broken: Receiver, *, other_private: bool = False
) -> str:
    return f"""
channels:
  people:
    type: webhook
    url: {people.url}
    allow_private_networks: true
  broken:
    type: webhook
    url: {broken.url}
    allow_private_networks: true
routes:
  - match: {{topic: sales}}
    to: [people]
  - match: {{topic: urgent}}
    to: [people]
    escalate_after: 1s
    escalate_to: [people]
  - match: {{topic: doomed}}
    to: [broken]
  - match: {{topic: rescued}}
    to: [broken]
    fallback: people
sources:
  bot:
    secrets: [{BOT_SECRET}]
    callback_url: {bot.url}
    callback_secret: {CALLBACK_SECRET}
    allow_private_networks: true
  other:
    secrets: [{OTHER_SECRET}]
    callback_secret: {CALLBACK_SECRET}
    allow_private_networks: {str(other_private).lower()}
  plain:
    secrets: [{PLAIN_SECRET}]
"""


def signed(body: bytes, secret: str = BOT_SECRET) -> dict[str, str]:
    now = int(time.time())
    msg_id = f"msg_{time.monotonic_ns()}"
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, msg_id, now, body),
    }


def with_callbacks(
    runtime: Runtime, sources: Callable[[], Mapping[str, SourceConfig]] | None = None
) -> Runtime:
    """The worker's event sender, with a fast retry policy (and, if given, a sources lookup
    the test controls instead of the active config's)."""
    assert runtime.workers is not None
    lookup = sources or (lambda: runtime.active.config.sources)
    runtime.workers.callbacks = callback_channel(
        runtime.db, runtime.http, runtime.clock, lookup, FAST
    )
    return runtime


def verified(received: Received) -> dict[str, Any]:
    """The event, after the reference library checked its signature (raises if bad)."""
    payload = Webhook(CALLBACK_SECRET).verify(received.body, received.headers)
    assert isinstance(payload, dict)
    return payload


def events_of(bot: Receiver, request_id: str) -> list[dict[str, Any]]:
    return [
        event
        for event in (verified(r) for r in bot.requests)
        if event["data"]["request_id"] == request_id
    ]


async def wait_for_event(bot: Receiver, request_id: str, kind: str) -> dict[str, Any]:
    await wait_until_async(
        lambda: any(e["type"] == kind for e in events_of(bot, request_id)),
        timeout=10,
        what=f"{kind} for {request_id}",
    )
    return next(e for e in events_of(bot, request_id) if e["type"] == kind)


async def event_rows(runtime: Runtime, request_id: str) -> list[Any]:
    async with runtime.db.reader.connect() as conn:
        rows = await conn.execute(
            sa.select(deliveries)
            .where(deliveries.c.request_id == request_id, deliveries.c.kind == "event")
            .order_by(deliveries.c.id)
        )
        return list(rows)


@pytest.fixture
def receivers() -> Any:
    with Receiver() as bot, Receiver() as people, Receiver() as broken:
        broken.reply_with(400, "no such hook")
        yield bot, people, broken


async def post_signed(
    client: httpx.AsyncClient, body: dict[str, Any], secret: str = BOT_SECRET
) -> httpx.Response:
    raw = orjson.dumps(body)
    return await client.post(URL, content=raw, headers=signed(raw, secret))


async def test_the_bot_hears_accept_notify_claim_and_resolve(
    make_runtime: Callable[..., Runtime], receivers: Any, database_url: str
) -> None:
    bot, people, broken = receivers
    runtime = with_callbacks(make_runtime(config(bot, people, broken), url=database_url))
    async with running_app(runtime) as client:
        answer = await post_signed(client, {"topic": "sales", "description": "40 seats"})
        assert answer.status_code == 202, answer.text
        request_id = answer.json()["id"]
        accepted = await wait_for_event(bot, request_id, "request.accepted")
        notified = await wait_for_event(bot, request_id, "request.notified")
        outcome = await handoff.claim(runtime, request_id, by="Ana", via="api")
        assert outcome.won
        claimed = await wait_for_event(bot, request_id, "request.claimed")
        await handoff.resolve(runtime, request_id, by="Ana", via="api")
        resolved = await wait_for_event(bot, request_id, "request.resolved")
    assert accepted["data"]["state"] == "waiting"
    assert notified["data"]["channel"] == "people"
    assert claimed["data"]["claimed_by"] == "Ana"
    assert claimed["data"]["via"] == "api"
    assert claimed["data"]["state"] == "claimed"
    assert resolved["data"]["state"] == "resolved"
    # Each event once; its webhook-id is its delivery's id, the request's data stays home.
    kinds = sorted(e["type"] for e in events_of(bot, request_id))
    assert kinds == sorted(
        ["request.accepted", "request.notified", "request.claimed", "request.resolved"]
    )
    ids = {r.headers["webhook-id"] for r in bot.requests}
    assert ids == {row.id for row in await event_rows(runtime, request_id)}
    assert all("40 seats" not in r.body.decode() for r in bot.requests)
    assert all(CALLBACK_SECRET not in r.body.decode() for r in bot.requests)


async def test_an_unclaimed_request_escalates_and_the_bot_hears_of_it(
    make_runtime: Callable[..., Runtime], receivers: Any
) -> None:
    bot, people, broken = receivers
    runtime = with_callbacks(make_runtime(config(bot, people, broken)))
    async with running_app(runtime) as client:
        answer = await post_signed(client, {"topic": "urgent", "description": "down"})
        assert answer.status_code == 202, answer.text
        request_id = answer.json()["id"]
        escalated = await wait_for_event(bot, request_id, "request.escalated")
    assert escalated["data"]["step"] == 1
    assert escalated["data"]["channel"] == "people"
    assert escalated["data"]["state"] == "waiting"
    notified = [e for e in events_of(bot, request_id) if e["type"] == "request.notified"]
    assert len(notified) == 1  # the escalation is not a second first notification


async def test_a_request_nobody_can_be_told_of_fails(
    make_runtime: Callable[..., Runtime], receivers: Any, database_url: str
) -> None:
    bot, people, broken = receivers
    runtime = with_callbacks(make_runtime(config(bot, people, broken), url=database_url))
    async with running_app(runtime) as client:
        answer = await post_signed(client, {"topic": "doomed", "description": "help"})
        assert answer.status_code == 202, answer.text
        request_id = answer.json()["id"]
        failed = await wait_for_event(bot, request_id, "request.failed")
    assert failed["data"]["channel"] == "broken"
    assert failed["data"]["deliveries"] == {"dead": 1}
    assert "request.notified" not in {e["type"] for e in events_of(bot, request_id)}


async def test_a_dead_notification_with_a_fallback_is_not_a_failure(
    make_runtime: Callable[..., Runtime], receivers: Any
) -> None:
    bot, people, broken = receivers
    runtime = with_callbacks(make_runtime(config(bot, people, broken)))
    async with running_app(runtime) as client:
        answer = await post_signed(client, {"topic": "rescued", "description": "help"})
        request_id = answer.json()["id"]
        notified = await wait_for_event(bot, request_id, "request.notified")
        await _settled_events(runtime, request_id, 2)
    assert notified["data"]["channel"] == "people"  # the fallback was the first one sent
    assert sorted(e["type"] for e in events_of(bot, request_id)) == [
        "request.accepted",
        "request.notified",
    ]


async def test_a_bot_answering_500_gets_the_event_again(
    make_runtime: Callable[..., Runtime], receivers: Any
) -> None:
    bot, people, broken = receivers
    bot.reply_with(500, "busy")
    runtime = with_callbacks(make_runtime(config(bot, people, broken)))
    async with running_app(runtime) as client:
        answer = await post_signed(client, {"topic": "sales", "description": "help"})
        request_id = answer.json()["id"]
        await bot.wait_for_requests_async(1)
        bot.reply_with(200)

        async def all_sent() -> bool:
            rows = await event_rows(runtime, request_id)
            return len(rows) == 2 and all(r.status == "sent" for r in rows)

        deadline = time.monotonic() + 10
        while not await all_sent():
            assert time.monotonic() < deadline, await event_rows(runtime, request_id)
            await _tick()
    rows = await event_rows(runtime, request_id)
    assert max(r.attempts for r in rows) >= 2
    first = next(r for r in bot.requests if r.json()["type"] == "request.accepted")
    repeats = [r for r in bot.requests if r.headers["webhook-id"] == first.headers["webhook-id"]]
    assert len(repeats) >= 2  # the same webhook-id on every try: the bot can drop a repeat
    for received in repeats:
        verified(received)


async def _tick() -> None:
    await asyncio.sleep(0.02)  # a poll interval while waiting on a condition with a deadline


async def test_a_bot_answering_400_leaves_the_event_dead_with_the_reason(
    make_runtime: Callable[..., Runtime], receivers: Any
) -> None:
    bot, people, broken = receivers
    bot.reply_with(400, "unknown event")
    runtime = with_callbacks(make_runtime(config(bot, people, broken)))
    async with running_app(runtime) as client:
        answer = await post_signed(client, {"topic": "sales", "description": "help"})
        request_id = answer.json()["id"]
        rows = await _settled_events(runtime, request_id, 2)
    assert {r.status for r in rows} == {"dead"}
    assert all(r.last_error == "HTTP 400: unknown event" for r in rows)
    assert all(r.attempts == 1 for r in rows)
    stored = await runtime.store.reads.get_request(request_id)
    assert stored is not None
    assert [d.status.value for d in stored.deliveries if d.channel == "people"] == ["sent"]


async def _settled_events(runtime: Runtime, request_id: str, count: int) -> list[Any]:
    deadline = time.monotonic() + 10
    while True:
        rows = await event_rows(runtime, request_id)
        if len(rows) >= count and all(r.status in ("sent", "dead") for r in rows):
            return rows
        assert time.monotonic() < deadline, rows
        await _tick()


async def test_the_guard_refuses_a_private_callback_unless_the_source_allows_it(
    make_runtime: Callable[..., Runtime], receivers: Any
) -> None:
    """The config said yes at accept; by send time the source no longer allows private
    networks: the event is refused at send, dead, and never reaches 127.0.0.1."""
    bot, people, broken = receivers
    runtime = make_runtime(config(bot, people, broken))
    current = dict(runtime.active.config.sources)
    with_callbacks(runtime, lambda: current)
    current["bot"] = current["bot"].model_copy(update={"allow_private_networks": False})
    async with running_app(runtime) as client:
        answer = await post_signed(client, {"topic": "sales", "description": "help"})
        request_id = answer.json()["id"]
        rows = await _settled_events(runtime, request_id, 2)
    assert {r.status for r in rows} == {"dead"}
    assert all("refused: 127.0.0.1 is a loopback address" in r.last_error for r in rows)
    assert bot.requests == []


async def test_a_source_gone_by_send_time_leaves_its_events_dead(
    make_runtime: Callable[..., Runtime], receivers: Any
) -> None:
    bot, people, broken = receivers
    runtime = make_runtime(config(bot, people, broken))
    current = dict(runtime.active.config.sources)
    with_callbacks(runtime, lambda: current)
    del current["bot"]
    async with running_app(runtime) as client:
        answer = await post_signed(client, {"topic": "sales", "description": "help"})
        request_id = answer.json()["id"]
        rows = await _settled_events(runtime, request_id, 2)
    assert {r.status for r in rows} == {"dead"}
    assert all("source 'bot' is not in the active config" in r.last_error for r in rows)
    assert bot.requests == []


async def test_a_source_with_a_callback_secret_may_name_its_own_callback_url(
    make_runtime: Callable[..., Runtime], receivers: Any
) -> None:
    bot, people, broken = receivers
    with Receiver() as own:
        runtime = with_callbacks(make_runtime(config(bot, people, broken, other_private=True)))
        async with running_app(runtime) as client:
            body = {"topic": "sales", "description": "help", "callback_url": own.url}
            answer = await post_signed(client, body, OTHER_SECRET)
            assert answer.status_code == 202, answer.text
            request_id = answer.json()["id"]
            await wait_for_event(own, request_id, "request.notified")
            stored = await runtime.store.reads.get_request(request_id)
    assert stored is not None
    assert "callback_url" not in orjson.dumps(stored.payload.model_dump(mode="json")).decode()
    assert bot.requests == []  # not the `bot` source's URL


@pytest.mark.parametrize(
    ("secret", "status", "code"),
    [
        (None, 403, "callback_not_allowed"),  # an API key caller
        (PLAIN_SECRET, 403, "callback_not_allowed"),  # a source without callback_secret
        (OTHER_SECRET, 422, "validation_failed"),  # allowed, but 127.0.0.1 is private
    ],
    ids=["api-key", "source-without-callback-secret", "private-url"],
)
async def test_a_callback_url_in_the_body_is_refused_unless_allowed(
    make_runtime: Callable[..., Runtime],
    receivers: Any,
    secret: str | None,
    status: int,
    code: str,
) -> None:
    bot, people, broken = receivers
    runtime = make_runtime(config(bot, people, broken), api_keys=f"{API_KEY}:ingest")
    body = {"topic": "sales", "description": "help", "callback_url": "http://127.0.0.1:9/x"}
    async with running_app(runtime, start_workers=False) as client:
        if secret is None:
            answer = await client.post(
                URL, json=body, headers={"authorization": f"Bearer {API_KEY}"}
            )
        else:
            answer = await post_signed(client, body, secret)
        listed = await runtime.store.reads.list_requests(limit=10)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    assert "callback" in error["message"] or error["details"][0]["loc"] == [
        "body",
        "callback_url",
    ]
    assert listed[0] == []  # nothing stored


async def test_without_a_callback_no_event_rows_are_made(
    make_runtime: Callable[..., Runtime], receivers: Any
) -> None:
    bot, people, broken = receivers
    runtime = with_callbacks(
        make_runtime(config(bot, people, broken), api_keys=f"{API_KEY}:ingest")
    )
    async with running_app(runtime) as client:
        answer = await client.post(
            URL,
            json={"topic": "sales", "description": "help"},
            headers={"authorization": f"Bearer {API_KEY}"},
        )
        request_id = answer.json()["id"]
        await people.wait_for_requests_async(1)
        await handoff.claim(runtime, request_id, by="Ana", via="api")
        assert await event_rows(runtime, request_id) == []
    assert bot.requests == []


async def test_a_slack_click_reaches_the_bot_as_a_claim(
    make_runtime: Callable[..., Runtime], receivers: Any, fake_slack: FakeSlack
) -> None:
    """What tests/e2e/test_callbacks.py checks across processes, in one: the claim made by a
    Slack click is the one the bot hears of."""
    bot, people, broken = receivers
    text = config(bot, people, broken).replace(
        "routes:\n",
        f"  sales-slack:\n    type: slack\n    webhook_url: {fake_slack.url}\n"
        f"    signing_secret: {SIGNING}\nroutes:\n  - match: {{topic: chat}}\n"
        "    to: [sales-slack]\n",
        1,
    )
    runtime = with_callbacks(make_runtime(text))
    async with running_app(runtime) as client:
        answer = await post_signed(client, {"topic": "chat", "description": "help"})
        request_id = answer.json()["id"]
        [posted] = await fake_slack.wait_for_payloads_async(1)
        body = click(fake_slack, posted)
        clicked = await client.post(
            "/v1/slack/interactions", content=body, headers=slack_signed(body)
        )
        assert clicked.status_code == 200, clicked.text
        claimed = await wait_for_event(bot, request_id, "request.claimed")
    assert claimed["data"]["via"] == "slack"
    assert claimed["data"]["claimed_by"]
