"""Slack channel against FakeSlack, a real local HTTP server acting as an Incoming Webhook."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from deskbell.channels import slack
from deskbell.channels.base import ChannelContext, Message
from deskbell.channels.slack import (
    CHANNEL_TYPE,
    WORD_JOINER,
    SlackChannel,
    escape_fitted,
    escape_mrkdwn,
    slack_link,
)
from deskbell.models import Outcome
from tests.channels.contract import Peer, SlackPeer
from tests.fakes import make_message
from tests.fakes.slack import FakeSlack

BROADCAST = re.compile(r"@(channel|here|everyone)", re.IGNORECASE)
BARE_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")

NASTY = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "@channel",
    "@here",
    "@everyone",
    "@Channel please",
    "<@U123>",
    "<#C123>",
    "<!subteam^S123>",
    "<http://evil|Your bank>",
    "<https://evil.example/login|https://bank.example>",
    "a & b &lt; c",
    "*bold* _it_ ~strike~ `code`",
]


def contract_peer() -> Peer:
    """For tests/channels/test_contract.py: the webhook transport (the Web API: test_slack_api)."""
    return SlackPeer(lambda url: {"webhook_url": url})


def build_check(message: Message) -> None:
    """For tests/channels/test_every_body_sends.py: the payload builds and is JSON."""
    settings = CHANNEL_TYPE.settings_model.model_validate(CHANNEL_TYPE.settings_model.EXAMPLE)
    payload = slack.build_payload(message, settings)
    assert orjson.loads(orjson.dumps(payload)) == payload


def channel(url: str, ctx: ChannelContext, **extra: Any) -> SlackChannel:
    settings = CHANNEL_TYPE.settings_model.model_validate(
        {"type": "slack", "webhook_url": url, **extra}
    )
    built = CHANNEL_TYPE.factory("sales-slack", settings, ctx)
    assert isinstance(built, SlackChannel)
    return built


def mrkdwn_texts(payload: dict[str, Any]) -> list[str]:
    """Every mrkdwn string in the blocks, plus the fallback text."""
    found = [payload["text"]]
    for block in payload["blocks"]:
        parts = [block.get("text"), *block.get("fields", []), *block.get("elements", [])]
        found += [p["text"] for p in parts if p and p.get("type") == "mrkdwn"]
    return found


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<!channel>", "&lt;!channel&gt;"),
        ("<!here>", "&lt;!here&gt;"),
        ("@channel", f"@{WORD_JOINER}channel"),
        ("@here", f"@{WORD_JOINER}here"),
        ("hey @EVERYONE", f"hey @{WORD_JOINER}EVERYONE"),
        ("<@U123>", "&lt;@U123&gt;"),
        ("<#C123>", "&lt;#C123&gt;"),
        ("<http://evil|Your bank>", "&lt;http://evil|Your bank&gt;"),
        ("*bold*", "*bold*"),
        ("Tom & Jerry", "Tom &amp; Jerry"),
        ("&lt;!here&gt;", "&amp;lt;!here&amp;gt;"),
        ("ana@example.com", "ana@example.com"),
    ],
)
def test_escape_mrkdwn(raw: str, expected: str) -> None:
    assert escape_mrkdwn(raw) == expected


@pytest.mark.parametrize("raw", NASTY)
def test_escaped_text_has_no_markup_left(raw: str) -> None:
    escaped = escape_mrkdwn(raw)
    assert "<" not in escaped
    assert ">" not in escaped
    assert not BARE_AMPERSAND.search(escaped)
    assert not BROADCAST.search(escaped)


def test_escape_fitted_cuts_raw_text_not_entities() -> None:
    escaped = escape_fitted("&" * 5000, 3000)
    assert len(escaped) <= 3000
    assert escaped.endswith("&amp;\u2026 (truncated)")


def test_link_target_cannot_supply_its_own_label() -> None:
    link = slack_link("https://chat.example.com/c?a=1&b=2|Your bank>x", "Open <it>")
    assert link == "<https://chat.example.com/c?a=1&amp;b=2%7CYour bank%3Ex|Open &lt;it&gt;>"
    assert link.count("|") == 1
    assert link.count(">") == 1


async def test_payload_arrives_well_formed(fake_slack: FakeSlack, ctx: ChannelContext) -> None:
    message = make_message(
        {
            "topic": "sales",
            "description": "Wants a quote for 40 seats",
            "customer": {"name": "Ana", "email": "ana@example.com", "phone": "+34 600 000 000"},
            "conversation_url": "https://chat.example.com/c/123",
            "language": "es",
            "metadata": {"plan": "pro", "seats": 40},
        }
    )

    result = await channel(fake_slack.url, ctx).send(message)

    assert result.outcome is Outcome.SENT
    [payload] = fake_slack.payloads
    [request] = fake_slack.requests
    assert request.headers["content-type"] == "application/json"
    assert payload["text"] == "Assistance requested (sales): Wants a quote for 40 seats"
    types = [block["type"] for block in payload["blocks"]]
    assert types[:2] == ["header", "section"]
    assert payload["blocks"][0]["text"]["text"] == "Assistance requested: sales"
    texts = "\n".join(mrkdwn_texts(payload))
    for expected in ("*Customer*\nAna", "ana@example.com", "+34 600 000 000", "*Language*\nes"):
        assert expected in texts
    assert "*plan*\npro" in texts
    assert "*seats*\n40" in texts
    [actions] = [block for block in payload["blocks"] if block["type"] == "actions"]
    [button] = actions["elements"]
    assert button["type"] == "button"
    assert button["url"] == "https://chat.example.com/c/123"
    assert button["text"]["text"] == "Open the conversation"


async def test_user_text_cannot_ping_or_fake_links(
    fake_slack: FakeSlack, ctx: ChannelContext
) -> None:
    nasty = " ".join(NASTY)
    message = make_message(
        {
            "topic": "sales",
            "description": nasty,
            "customer": {"name": "<!here> @channel", "phone": "<tel:1|Call me>"},
            "metadata": {"<!channel>": "<http://evil|bank>", "note": "@everyone"},
        }
    )

    assert (await channel(fake_slack.url, ctx).send(message)).outcome is Outcome.SENT

    [payload] = fake_slack.payloads
    for text in mrkdwn_texts(payload):
        assert "<" not in text, text
        assert not BROADCAST.search(text), text


async def test_minimal_request_has_no_optional_blocks(
    fake_slack: FakeSlack, ctx: ChannelContext
) -> None:
    await channel(fake_slack.url, ctx).send(make_message())

    [payload] = fake_slack.payloads
    assert [block["type"] for block in payload["blocks"]] == ["header", "section", "context"]


async def test_wrong_webhook_path_is_permanent(fake_slack: FakeSlack, ctx: ChannelContext) -> None:
    result = await channel(fake_slack.base_url + "/services/T0/B0/wrong", ctx).send(make_message())

    assert result.outcome is Outcome.PERMANENT
    assert result.error == "HTTP 404: no_service"


async def test_slow_answer_is_a_transient_timeout(
    fake_slack: FakeSlack, ctx: ChannelContext
) -> None:
    fake_slack.delay = 5.0

    result = await channel(fake_slack.url, ctx, timeout=0.2).send(make_message())

    assert result.outcome is Outcome.TRANSIENT
    assert result.error == "timeout: ReadTimeout"


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.com/x", "hooks.slack.com/services/x", "https://", ""]
)
def test_webhook_url_must_be_http(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CHANNEL_TYPE.settings_model.model_validate({"type": "slack", "webhook_url": url})
    assert "http(s) URL" in str(caught.value)
    assert "input_value" not in str(caught.value)  # a webhook URL is a credential


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError, match="webhok_url"):
        CHANNEL_TYPE.settings_model.model_validate(
            {"type": "slack", "webhook_url": "https://x.example/h", "webhok_url": "typo"}
        )
