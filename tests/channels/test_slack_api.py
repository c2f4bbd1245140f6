"""Slack through the Web API (`chat.postMessage`) against FakeSlack, and the Block Kit layout's
limits and templates."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from deskbell.channels.base import ChannelContext
from deskbell.channels.slack import CHANNEL_TYPE, SlackChannel
from deskbell.models import Outcome
from tests.fakes import make_message
from tests.fakes.slack import API_PATH, FakeSlack, Reply


def api_channel(fake: FakeSlack, ctx: ChannelContext, **extra: Any) -> SlackChannel:
    block = {"type": "slack", "token": fake.token, "channel": "C0TEST", "api_url": fake.api_url}
    settings = CHANNEL_TYPE.settings_model.model_validate({**block, **extra})
    built = CHANNEL_TYPE.factory("sales-bot", settings, ctx)
    assert isinstance(built, SlackChannel)
    return built


async def test_post_message_carries_token_channel_and_blocks(
    fake_slack: FakeSlack, ctx: ChannelContext
) -> None:
    message = make_message(
        {"topic": "sales", "description": "Quote please", "conversation_url": "https://c.example/1"}
    )

    result = await api_channel(fake_slack, ctx).send(message)

    assert result.outcome is Outcome.SENT
    [request] = fake_slack.requests
    assert request.path == API_PATH
    assert request.headers["authorization"] == "Bearer xoxb-test-token"
    body = json.loads(request.body)
    assert body["channel"] == "C0TEST"
    assert body["unfurl_links"] is False
    assert [b["type"] for b in body["blocks"]] == ["header", "section", "actions", "context"]
    assert body["blocks"][0]["text"]["text"] == "Assistance requested: sales"
    assert fake_slack.payloads == [body]


async def test_a_wrong_token_is_permanent_and_never_shown(
    fake_slack: FakeSlack, ctx: ChannelContext
) -> None:
    result = await api_channel(fake_slack, ctx, token="xoxb-wrong-secret").send(make_message())
    assert result.outcome is Outcome.PERMANENT
    assert result.error == "Slack API error: invalid_auth"
    assert fake_slack.payloads == []


@pytest.mark.parametrize(
    ("reply", "outcome", "error", "retry_after"),
    [
        (Reply.api_error("not_in_channel"), Outcome.PERMANENT, "not_in_channel", None),
        (Reply.api_error("channel_not_found"), Outcome.PERMANENT, "channel_not_found", None),
        (Reply.api_error("is_archived"), Outcome.PERMANENT, "is_archived", None),
        (Reply.api_error("ratelimited"), Outcome.TRANSIENT, "ratelimited", None),
        (Reply.api_error("internal_error"), Outcome.TRANSIENT, "internal_error", None),
        (Reply(429, retry_after=7), Outcome.TRANSIENT, "HTTP 429", 7.0),
        (Reply(503), Outcome.TRANSIENT, "HTTP 503", None),
        (Reply(200, body="<html>proxy</html>"), Outcome.TRANSIENT, "not JSON", None),
    ],
)
async def test_api_answers_map_to_outcomes(
    fake_slack: FakeSlack,
    ctx: ChannelContext,
    reply: Reply,
    outcome: Outcome,
    error: str,
    retry_after: float | None,
) -> None:
    fake_slack.reply_next(reply)

    result = await api_channel(fake_slack, ctx).send(make_message())

    assert result.outcome is outcome
    assert error in (result.error or "")
    assert result.retry_after == retry_after


async def test_unknown_channel_id_is_permanent(fake_slack: FakeSlack, ctx: ChannelContext) -> None:
    result = await api_channel(fake_slack, ctx, channel="C0NOPE").send(make_message())
    assert result.outcome is Outcome.PERMANENT
    assert result.error == "Slack API error: channel_not_found"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({}, "set either webhook_url, or token"),
        ({"webhook_url": "https://h.example/x", "token": "xoxb-1", "channel": "C1"}, "either"),
        ({"token": "xoxb-1"}, "channel: required with token"),
        ({"webhook_url": "https://h.example/x", "channel": "C1"}, "only with token"),
    ],
)
def test_exactly_one_transport(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as caught:
        CHANNEL_TYPE.settings_model.model_validate({"type": "slack", **block})
    assert "xoxb-1" not in str(caught.value)


async def test_long_text_is_cut_within_limits_with_a_marker(
    fake_slack: FakeSlack, ctx: ChannelContext
) -> None:
    metadata = {f"key{i:02d}": "v" * 100 for i in range(50)}
    message = make_message(
        {
            "topic": "sales",
            "description": "<&>" * 1333,
            "customer": {"name": "N" * 200},
            "metadata": metadata,
        }
    )

    assert (await api_channel(fake_slack, ctx).send(message)).outcome is Outcome.SENT

    [payload] = fake_slack.payloads
    blocks = payload["blocks"]
    assert len(blocks) <= 50
    body = blocks[1]["text"]["text"]
    assert len(body) <= 3000
    assert body.endswith("\u2026 (truncated)")
    assert "<" not in body
    assert not body.removesuffix("\u2026 (truncated)").rstrip().endswith(("&", "&a", "&am"))
    metadata_sections = [b for b in blocks if b.get("text", {}).get("text") == "*Metadata*"]
    fields = [f for b in blocks if b["type"] == "section" for f in b.get("fields", [])]
    assert len(metadata_sections) == 1
    assert all(len(b.get("fields", [])) <= 10 for b in blocks)
    assert sum("*key" in f["text"] for f in fields) == 50
    assert all(len(f["text"]) <= 2000 for f in fields)
    assert len(payload["text"]) <= 4000


async def test_templates_escape_values_but_keep_their_own_markup(
    fake_slack: FakeSlack, ctx: ChannelContext
) -> None:
    template = {"body": "*New lead* from {{ customer.name or 'someone' }}: {{ description }}"}
    message = make_message(
        {"topic": "sales", "description": "<!here> hi", "customer": {"name": "@channel"}}
    )

    await api_channel(fake_slack, ctx, template=template).send(message)

    body = fake_slack.payloads[0]["blocks"][1]["text"]["text"]
    assert body == "*New lead* from @\u2060channel: &lt;!here&gt; hi"


async def test_a_template_that_fails_at_send_is_permanent(
    fake_slack: FakeSlack, ctx: ChannelContext
) -> None:
    template = {"text": "{{ topic }}\n{{ customer.name.upper() }}"}

    result = await api_channel(fake_slack, ctx, template=template).send(make_message())

    assert result.outcome is Outcome.PERMANENT
    assert result.error is not None
    assert result.error.startswith("template 'text' (inline), line 2:")
    assert fake_slack.requests == []
