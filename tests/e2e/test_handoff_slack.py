"""The Slack handoff with real processes: `deskbell serve` sends a request to the local fake
Slack, the message has a Claim button, the test posts the click as Slack would (form-encoded,
signed with the app's signing secret), and the request is `claimed` with the fake holding the
updated message. A wrong signature and a replayed old click are 401 and change nothing. The
bot's side (the `request.claimed` callback) is tests/e2e/test_callbacks.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.blocks import Block

from deskbell.channels.kit.slack_claim import CLAIM_ACTION_ID, CLAIMED_BLOCK_ID
from tests.api.test_slack_interactions import OTHER_SIGNING, SIGNING, click, signed
from tests.fakes import wait_until
from tests.fakes.slack import FakeSlack
from tests.process import Deskbell, free_port

CONFIG = """
channels:
  sales-slack:
    type: slack
    webhook_url: ${{SLACK_URL}}
    signing_secret: ${{SLACK_SIGNING_SECRET}}
  sales-bot:
    type: slack
    token: ${{SLACK_BOT_TOKEN}}
    channel: C0TEST
    api_url: {api_url}
    signing_secret: ${{SLACK_SIGNING_SECRET}}
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
  - match: {{topic: bot}}
    to: [sales-bot]
"""


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


@pytest.fixture
def server(tmp_path: Path, slack: FakeSlack) -> Iterator[Deskbell]:
    config = tmp_path / "deskbell.yaml"
    config.write_text(CONFIG.format(api_url=slack.api_url))
    port = free_port()
    env = {
        "DESKBELL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'e2e.db'}",
        "DESKBELL_CONFIG": str(config),
        "DESKBELL_LOG_FORMAT": "json",
        "SLACK_URL": slack.url,
        "SLACK_BOT_TOKEN": slack.token,
        "SLACK_SIGNING_SECRET": SIGNING,
    }
    running = Deskbell(["serve"], env=env, workdir=tmp_path, port=port)
    try:
        yield running.wait_ready()
    finally:
        running.stop()


def accept(server: Deskbell, slack: FakeSlack, topic: str) -> tuple[str, dict[str, Any]]:
    """Post a request; (its id, the message the fake Slack received, with a Claim button)."""
    answer = server.client.post(
        "/v1/assistance-requests", json={"topic": topic, "description": "Wants a quote"}
    )
    assert answer.status_code == 202, answer.text
    [posted] = slack.wait_for_payloads(1, timeout=15)
    buttons = [
        element
        for block in posted["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]
    claim = [b["value"] for b in buttons if b["action_id"] == CLAIM_ACTION_ID]
    assert claim == [answer.json()["id"]]
    return answer.json()["id"], posted


def handoff(server: Deskbell, request_id: str) -> dict[str, Any]:
    answer = server.client.get(f"/v1/assistance-requests/{request_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()["handoff"]
    return found


def valid(blocks: list[dict[str, Any]]) -> None:
    for original in blocks:
        block = Block.parse(original)
        assert block is not None
        block.validate_json()


def test_a_signed_click_claims_and_the_message_is_replaced(
    server: Deskbell, slack: FakeSlack
) -> None:
    request_id, posted = accept(server, slack, "sales")
    body = click(slack, posted)

    answer = server.client.post("/v1/slack/interactions", content=body, headers=signed(body))

    assert answer.status_code == 200
    state = handoff(server, request_id)
    assert (state["state"], state["claimed_by"], state["via"]) == ("claimed", "ana", "slack")
    [update] = slack.wait_for_responses(1, timeout=15)
    assert update["replace_original"] is True
    valid(update["blocks"])
    [line] = [b for b in update["blocks"] if b.get("block_id") == CLAIMED_BLOCK_ID]
    assert "Claimed by *ana*" in line["elements"][0]["text"]


def test_a_web_api_message_is_updated_with_chat_update(server: Deskbell, slack: FakeSlack) -> None:
    request_id, posted = accept(server, slack, "bot")
    body = click(slack, posted, channel_id="C0TEST", user={"id": "U0BEN", "name": "ben"})

    answer = server.client.post("/v1/slack/interactions", content=body, headers=signed(body))

    assert answer.status_code == 200
    assert handoff(server, request_id)["claimed_by"] == "ben"
    [update] = slack.wait_for_updates(1, timeout=15)
    assert (update["channel"], update["ts"]) == ("C0TEST", "1700000000.000100")
    valid(update["blocks"])


@pytest.mark.parametrize(
    ("secret", "age", "code"),
    [(OTHER_SIGNING, 0, "signature_invalid"), (SIGNING, 10 * 60, "signature_stale")],
    ids=["wrong signature", "replayed old timestamp"],
)
def test_a_bad_or_replayed_click_is_401_and_changes_nothing(
    server: Deskbell, slack: FakeSlack, secret: str, age: int, code: str
) -> None:
    request_id, posted = accept(server, slack, "sales")
    body = click(slack, posted)

    answer = server.client.post(
        "/v1/slack/interactions", content=body, headers=signed(body, secret=secret, age=age)
    )

    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == code
    assert handoff(server, request_id)["state"] == "waiting"
    assert slack.responses == []
    # A correct click afterwards still works: the refused one changed nothing.
    good = server.client.post("/v1/slack/interactions", content=body, headers=signed(body))
    assert good.status_code == 200
    wait_until(lambda: len(slack.responses) == 1, 15, "the message update")
    assert handoff(server, request_id)["state"] == "claimed"
