"""The bot's side of the handoff, end to end with real processes: a bot posts a signed request
to `deskbell serve`, the message reaches the fake Slack with its Claim button, a person
clicks it (a Slack-signed interaction), and the bot's own receiver gets `request.accepted`,
`request.notified` and `request.claimed`, each verified with the `standardwebhooks` library.
A refused click (bad signature) claims nothing, so the bot hears no claim."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from standardwebhooks.webhooks import Webhook

from deskbell.api.webhooks import sign
from tests.api.test_slack_interactions import SIGNING, click
from tests.api.test_slack_interactions import signed as slack_signed
from tests.fakes import wait_until
from tests.fakes.receiver import Receiver
from tests.fakes.slack import FakeSlack
from tests.process import Deskbell, free_port

BOT_SECRET = "whsec_" + base64.b64encode(b"b" * 32).decode()
CALLBACK_SECRET = "whsec_" + base64.b64encode(b"c" * 32).decode()
CONFIG = """
channels:
  sales-slack:
    type: slack
    webhook_url: {slack}
    signing_secret: {signing}
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
sources:
  bot:
    secrets: [{bot_secret}]
    callback_url: {callback}
    callback_secret: {callback_secret}
    allow_private_networks: true
"""


@pytest.fixture
def peers() -> Iterator[tuple[FakeSlack, Receiver]]:
    with FakeSlack() as slack, Receiver() as bot:
        yield slack, bot


READ_KEY = "e2e-callbacks-reader-key-0123456789abcdef"


@pytest.fixture
def server(tmp_path: Path, peers: tuple[FakeSlack, Receiver]) -> Iterator[Deskbell]:
    slack, bot = peers
    config = tmp_path / "deskbell.yaml"
    config.write_text(
        CONFIG.format(
            slack=slack.url,
            signing=SIGNING,
            bot_secret=BOT_SECRET,
            callback=bot.url,
            callback_secret=CALLBACK_SECRET,
        )
    )
    port = free_port()
    env = {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'e2e.db'}",
        "DESKBELL_CONFIG": str(config),
        "DESKBELL_PORT": str(port),
        "DESKBELL_LOG_FORMAT": "json",
        # a signing source turns auth on: reading the request back needs a key
        "DESKBELL_API_KEYS": f"{READ_KEY}:read",
    }
    running = Deskbell(["serve"], env=env, workdir=tmp_path, port=port)
    try:
        yield running.wait_ready()
    finally:
        running.stop()


def post_signed(server: Deskbell, body: dict[str, Any]) -> str:
    raw = orjson.dumps(body)
    now = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": "msg_e2e_1",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(BOT_SECRET, "msg_e2e_1", now, raw),
    }
    answer = server.client.post("/v1/assistance-requests", content=raw, headers=headers)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def events(bot: Receiver) -> dict[str, dict[str, Any]]:
    """Every event received, by type, each verified by the reference library."""
    verifier = Webhook(CALLBACK_SECRET)
    found = {}
    for received in bot.requests:
        event = verifier.verify(received.body, received.headers)
        assert isinstance(event, dict)
        found[event["type"]] = event
    return found


def test_a_slack_claim_reaches_the_bot_signed(
    server: Deskbell, peers: tuple[FakeSlack, Receiver]
) -> None:
    slack, bot = peers
    request_id = post_signed(server, {"topic": "sales", "description": "40 seats"})
    [posted] = slack.wait_for_payloads(1)
    wait_until(lambda: "request.notified" in events(bot), what="request.notified")

    wrong = click(slack, posted)
    refused = server.client.post(
        "/v1/slack/interactions", content=wrong, headers=slack_signed(wrong, secret="0" * 32)
    )
    assert refused.status_code == 401
    body = click(slack, posted)
    answer = server.client.post("/v1/slack/interactions", content=body, headers=slack_signed(body))
    assert answer.status_code == 200, answer.text
    wait_until(lambda: "request.claimed" in events(bot), what="request.claimed")

    received = events(bot)
    assert set(received) == {"request.accepted", "request.notified", "request.claimed"}
    claimed = received["request.claimed"]["data"]
    assert claimed["request_id"] == request_id
    assert claimed["state"] == "claimed"
    assert claimed["via"] == "slack"
    assert claimed["claimed_by"]
    detail = server.client.get(
        f"/v1/assistance-requests/{request_id}", headers={"Authorization": f"Bearer {READ_KEY}"}
    ).json()
    assert detail["handoff"]["state"] == "claimed"
