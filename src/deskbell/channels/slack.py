"""Slack through an Incoming Webhook: one JSON POST per delivery.

Config block:

    sales-slack:
      type: slack
      webhook_url: ${SLACK_WEBHOOK_URL}   # https://hooks.slack.com/services/T.../B.../...

Everything a customer or a chatbot wrote is escaped with `escape_mrkdwn` before it reaches
Slack, because Slack reads message text as markup: `<!channel>` pings a whole channel and
`<http://evil|Your bank>` shows a link whose label lies about its target. The webhook URL is
a credential (anyone holding it can post), so it is a `SecretStr` and is scrubbed from errors.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import ConfigDict, SecretStr, field_validator

from deskbell.channels.base import (
    ChannelContext,
    ChannelSettings,
    ChannelType,
    Message,
    SendResult,
    classify_http,
    classify_http_error,
    http_timeout,
)
from deskbell.channels.text import details, metadata_items, redact, truncate

# Slack's own limits (Block Kit reference): a header's plain text, a section's text and a
# section field. Staying under them avoids an `invalid_blocks` 400 that no retry could fix.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
FALLBACK_SUMMARY = 300

WORD_JOINER = "\u2060"
_BROADCAST = re.compile(r"@(channel|here|everyone)", re.IGNORECASE)


def escape_mrkdwn(text: str) -> str:
    """User text made inert for Slack's mrkdwn.

    `&`, `<` and `>` become entities, as Slack documents, so no `<!here>`, `<@U123>`, `<#C1>`
    or `<url|label>` survives. A bare `@channel`, `@here` or `@everyone` gets a word joiner
    after the `@`, so it reads the same but pings nobody even where Slack links names.
    Formatting characters (`*`, `_`, `~`, backticks) are left alone: they can only change how
    the text looks, never whom it reaches or where a link goes.
    """
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub(lambda match: "@" + WORD_JOINER + match.group(1), escaped)


def escape_fitted(text: str, limit: int) -> str:
    """`escape_mrkdwn(text)` no longer than `limit`, cutting the raw text (never the escaped
    one, which could leave half an entity behind)."""
    cut = limit
    while True:
        escaped = escape_mrkdwn(truncate(text, cut))
        if len(escaped) <= limit:
            return escaped
        # Shrink in proportion to the overflow; at least one character, so this ends.
        cut = min(cut - 1, cut * limit // len(escaped))


def slack_link(url: str, label: str) -> str:
    """A mrkdwn link whose target and label cannot be bent by what is inside either.

    The URL is already a validated http(s) URL; `&<>` become entities and `|` is percent-encoded
    so nothing in it can end the target early and supply a label of its own.
    """
    target = url.replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{target}|{escape_mrkdwn(label)}>"


def build_payload(message: Message) -> dict[str, Any]:
    """The webhook body: `text` is the plain fallback used in notifications, `blocks` is what
    the channel shows. Both carry only escaped user text."""
    request = message.request
    summary = escape_fitted(request.description, FALLBACK_SUMMARY)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": truncate(f"Assistance requested: {request.topic}", HEADER_LIMIT),
            },
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": escape_fitted(request.description, SECTION_LIMIT)},
        },
    ]
    fields = [
        {
            "type": "mrkdwn",
            "text": f"*{item.label}*\n" + escape_fitted(item.value, FIELD_LIMIT - 40),
        }
        for item in details(request)
    ]
    if fields:
        blocks.append({"type": "section", "fields": fields[:10]})
    if request.conversation_url:
        link = slack_link(request.conversation_url, "Open the conversation")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": link}})
    metadata = "  \u00b7  ".join(f"{item.label}: {item.value}" for item in metadata_items(request))
    if metadata:
        blocks.append(
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": escape_fitted(metadata, SECTION_LIMIT)}],
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": escape_mrkdwn(f"request {message.request_id} via deskbell"),
                }
            ],
        }
    )
    return {"text": f"Assistance requested ({request.topic}): {summary}", "blocks": blocks}


class SlackSettings(ChannelSettings):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["slack"]
    webhook_url: SecretStr

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        # The message never repeats the value: it is a credential.
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL such as https://hooks.slack.com/services/...")
        return value


class SlackChannel:
    """Posts one message per send; Slack's answer goes through the shared HTTP classifier
    (400 `invalid_payload`, 403/404 `no_service` are permanent; 429 and 5xx transient)."""

    def __init__(self, name: str, settings: SlackSettings, ctx: ChannelContext) -> None:
        self.name = name
        self._settings = settings
        self._ctx = ctx

    async def send(self, message: Message) -> SendResult:
        url = self._settings.webhook_url.get_secret_value()
        try:
            response = await self._ctx.http.post(
                url, json=build_payload(message), timeout=http_timeout(self._settings)
            )
        except httpx.HTTPError as exc:
            return _scrubbed(classify_http_error(exc), url)
        result = classify_http(
            response.status_code, response.headers, response.text, now=self._ctx.clock.now()
        )
        return _scrubbed(result, url)


def _scrubbed(result: SendResult, url: str) -> SendResult:
    return dataclasses.replace(result, error=redact(result.error, url))


CHANNEL_TYPE = ChannelType(name="slack", settings_model=SlackSettings, factory=SlackChannel)
