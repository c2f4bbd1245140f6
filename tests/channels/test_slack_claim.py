"""The Slack handoff in blocks: the Claim button, the claimed message, and the two ways of
updating a posted message, against FakeSlack; every block set is parsed and validated by
slack_sdk's own models, so the real Slack would take it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement

from deskbell.channels import build_registry
from deskbell.channels.base import ChannelContext
from deskbell.channels.kit.slack_claim import (
    CLAIM_ACTION_ID,
    CLAIM_BLOCK_ID,
    CLAIMED_BLOCK_ID,
    claimed_blocks,
)
from deskbell.channels.slack import CHANNEL_TYPE, SlackChannel, SlackSettings, build_payload
from deskbell.config.load import parse_config
from deskbell.models import Outcome
from tests.fakes import make_message
from tests.fakes.slack import FakeSlack

SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"
AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)
REQUEST = {
    "topic": "sales",
    "description": "Wants a quote",
    "conversation_url": "https://chat.example.com/c/1",
}


def settings(**extra: Any) -> SlackSettings:
    block = {"type": "slack", "webhook_url": "https://hooks.slack.com/services/T/B/X", **extra}
    return SlackSettings.model_validate(block)


def validated(blocks: list[dict[str, Any]]) -> list[Block]:
    """slack_sdk's models: parse each block, check Slack's rules, and give back the same JSON."""
    parsed = [Block.parse(block) for block in blocks]
    for block, original in zip(parsed, blocks, strict=True):
        assert block is not None, original
        block.validate_json()
        assert block.to_dict() == original
    return [block for block in parsed if block is not None]


def claim_buttons(blocks: list[Block]) -> list[ButtonElement]:
    return [
        element
        for block in blocks
        if isinstance(block, ActionsBlock)
        for element in block.elements
        if isinstance(element, ButtonElement) and element.action_id == CLAIM_ACTION_ID
    ]


def test_a_channel_with_a_signing_secret_has_a_claim_button() -> None:
    message = make_message(REQUEST, request_id="0190a0b0-0000-7000-8000-000000000001")

    blocks = validated(build_payload(message, settings(signing_secret=SIGNING))["blocks"])

    [button] = claim_buttons(blocks)
    assert button.value == "0190a0b0-0000-7000-8000-000000000001"
    assert button.text is not None
    assert button.text.text == "Claim"
    [actions] = [block for block in blocks if isinstance(block, ActionsBlock)]
    assert actions.block_id == CLAIM_BLOCK_ID
    assert len(actions.elements) == 2  # the conversation button stays beside it


def test_without_a_signing_secret_no_button_that_could_not_work() -> None:
    blocks = validated(build_payload(make_message(REQUEST), settings())["blocks"])

    assert claim_buttons(blocks) == []


def test_the_signing_secret_is_redacted() -> None:
    config = parse_config(
        f"""
channels:
  sales-slack:
    type: slack
    webhook_url: https://hooks.slack.com/services/T/B/X
    signing_secret: {SIGNING}
routes:
  - match: {{topic: sales}}
    to: [sales-slack]
""",
        build_registry(),
    )

    shown = config.redacted()["channels"]["sales-slack"]
    assert shown["signing_secret"] == "**********"
    assert SIGNING not in repr(config)


def test_claimed_message_says_who_and_when_instead_of_the_button() -> None:
    original = build_payload(make_message(REQUEST), settings(signing_secret=SIGNING))["blocks"]

    updated = claimed_blocks(original, "Ana <!here>", AT)

    blocks = validated(updated)
    assert claim_buttons(blocks) == []
    [line] = [block for block in updated if block.get("block_id") == CLAIMED_BLOCK_ID]
    text = line["elements"][0]["text"]
    assert "Claimed by *Ana &lt;!here&gt;*" in text
    assert f"<!date^{int(AT.timestamp())}^" in text
    assert "2026-03-01 12:30 UTC" in text
    [actions] = [block for block in updated if block["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == ["deskbell-open-conversation"]
    assert updated[: len(original) - 2] == original[: len(original) - 2]  # the rest unchanged


def test_a_message_updated_again_keeps_one_line() -> None:
    original = build_payload(make_message(), settings(signing_secret=SIGNING))["blocks"]

    twice = claimed_blocks(claimed_blocks(original, "Ana", AT), "Ben", AT, resolved=True)

    validated(twice)
    lines = [block for block in twice if block.get("block_id") == CLAIMED_BLOCK_ID]
    assert len(lines) == 1
    assert "Resolved by *Ben*" in lines[0]["elements"][0]["text"]
    assert all(block["type"] != "actions" for block in twice)  # no conversation URL here


def test_without_the_original_blocks_one_line() -> None:
    assert [block.type for block in validated(claimed_blocks(None, "Ana", AT))] == ["context"]


async def test_web_api_message_is_updated_with_chat_update(
    fake_slack: FakeSlack, ctx: ChannelContext
) -> None:
    channel = api_channel(fake_slack, ctx)
    payload = {"text": "Claimed by Ana", "blocks": claimed_blocks(None, "Ana", AT)}

    result = await channel.update(payload, channel_id="C0TEST", ts="1700000000.000100")

    assert result.outcome is Outcome.SENT
    [update] = fake_slack.updates
    assert update["channel"] == "C0TEST"
    assert update["ts"] == "1700000000.000100"
    validated(update["blocks"])
    assert fake_slack.payloads == []  # nothing new was posted


async def test_webhook_message_is_replaced_through_response_url(
    fake_slack: FakeSlack, ctx: ChannelContext
) -> None:
    channel = webhook_channel(fake_slack, ctx)
    payload = {"text": "Claimed by Ana", "blocks": claimed_blocks(None, "Ana", AT)}

    result = await channel.update(payload, response_url=fake_slack.response_url)

    assert result.outcome is Outcome.SENT
    [response] = fake_slack.responses
    assert response["replace_original"] is True
    validated(response["blocks"])


@pytest.mark.parametrize(
    ("url", "trusted"),
    [
        ("https://hooks.slack.com/actions/T1/1/abc", True),
        ("https://slack.com/api/x", True),
        ("http://hooks.slack.com/actions/T1/1/abc", False),  # not https
        ("https://hooks.slack.com.evil.example/actions", False),
        ("https://evilslack.com/actions", False),
        ("http://169.254.169.254/latest/meta-data/", False),
        ("not a url", False),
    ],
)
def test_only_slack_urls_are_trusted_as_response_url(url: str, trusted: bool) -> None:
    assert settings().trusts_response_url(url) is trusted


async def test_a_response_url_elsewhere_is_never_posted_to(
    fake_slack: FakeSlack, ctx: ChannelContext
) -> None:
    elsewhere = FakeSlack().start()
    try:
        channel = webhook_channel(fake_slack, ctx)
        result = await channel.respond(elsewhere.response_url, {"text": "hi"})
    finally:
        elsewhere.stop()

    assert result.outcome is Outcome.PERMANENT
    assert elsewhere.requests == []


def webhook_channel(fake: FakeSlack, ctx: ChannelContext) -> SlackChannel:
    built = CHANNEL_TYPE.factory(
        "sales-slack", settings(webhook_url=fake.url, signing_secret=SIGNING), ctx
    )
    assert isinstance(built, SlackChannel)
    return built


def api_channel(fake: FakeSlack, ctx: ChannelContext) -> SlackChannel:
    block = {
        "type": "slack",
        "token": fake.token,
        "channel": "C0TEST",
        "api_url": fake.api_url,
        "signing_secret": SIGNING,
    }
    built = CHANNEL_TYPE.factory("sales-bot", SlackSettings.model_validate(block), ctx)
    assert isinstance(built, SlackChannel)
    return built
