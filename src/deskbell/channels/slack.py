"""Slack: an Incoming Webhook or the Web API (`chat.postMessage`), one Block Kit message each.

Config block, one of:

    sales-slack:                          # Incoming Webhook: the channel is fixed by the URL
      type: slack
      webhook_url: ${SLACK_WEBHOOK_URL}   # https://hooks.slack.com/services/T.../B.../...

    sales-slack-bot:                      # Web API: a bot token and a channel id
      type: slack
      token: ${SLACK_BOT_TOKEN}           # xoxb-..., needs the chat:write scope
      channel: C0123456789                # the bot must be a member of the channel
      template:                           # optional overrides: header, body, text
        body: "*New lead:* {{ description }}"

Either may add `signing_secret: ${SLACK_SIGNING_SECRET}` (the Slack app's): its messages
then carry a Claim button, whose clicks `POST /v1/slack/interactions` checks with it
(api/routes/slack.py); the claimed message is built by kit/slack_claim.py and sent back by
`update` (`chat.update` for the Web API, else the click's `response_url`).

The message: a header with the topic, the description (`body`), fields for the customer and
language, a Metadata section of fields, the Claim button and a button to the conversation,
and a context line with the request id; `text` is the plain fallback shown in
notifications. Every value from the request is escaped (kit/mrkdwn.py), and anything over
Slack's limits is cut with a visible "(truncated)" marker instead of being refused with
`invalid_blocks`.

The two transports answer differently. A webhook speaks HTTP status codes (shared classifier).
The Web API answers `200 {"ok": false, "error": "..."}`: `ratelimited` and Slack-side
failures are transient, everything else (`invalid_auth`, `channel_not_found`,
`not_in_channel`, ...) is permanent, because repeating the call cannot fix a token or a
membership. The webhook URL and the token are credentials: `SecretStr`, scrubbed from errors.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import ConfigDict, SecretStr, field_validator, model_validator

from deskbell.channels.base import (
    ChannelContext,
    ChannelSettings,
    ChannelType,
    Message,
    SendResult,
    building,
    classify_http,
    classify_http_error,
    http_timeout,
)
from deskbell.channels.kit import render as templates
from deskbell.channels.kit.http import post
from deskbell.channels.kit.mrkdwn import (
    WORD_JOINER,
    escape_fitted,
    escape_mrkdwn,
    fit_escaped,
    slack_link,
)
from deskbell.channels.kit.render import Mode, TemplateSpec
from deskbell.channels.kit.slack_claim import CLAIM_BLOCK_ID, claim_button
from deskbell.channels.kit.text import ELLIPSIS, details, metadata_items, redact, truncate
from deskbell.errors import UnsendableMessage

__all__ = ["CHANNEL_TYPE", "WORD_JOINER", "escape_fitted", "escape_mrkdwn", "slack_link"]

# Slack's own limits (Block Kit reference): header plain text, section text, section field,
# fields per section, button text and URL; `text` beyond 4,000 characters is cut by Slack.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
FIELDS_PER_SECTION = 10
BUTTON_URL_LIMIT = 3000
TEXT_LIMIT = 4000
DEFAULT_API_URL = "https://slack.com/api"
# The body is serialised in the build step (orjson), so a value JSON cannot carry is found
# before anything is sent; the header is the one httpx's `json=` set before.
JSON_HEADERS = {"Content-Type": "application/json"}
# Web API errors worth retrying; every other error code is permanent.
TRANSIENT_API_ERRORS = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
     "request_timeout", "team_added_to_org"}
)  # fmt: skip


def _fields(items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    label_room = FIELD_LIMIT - 100  # a label is short; leave it room
    return [
        {
            "type": "mrkdwn",
            "text": f"*{escape_fitted(label, 80)}*\n{escape_fitted(value, label_room)}",
        }
        for label, value in items
    ]


def build_blocks(
    message: Message, header: str, body: str, *, claimable: bool = False
) -> list[dict[str, Any]]:
    """The Block Kit layout; `header` is plain text, `body` is already-escaped mrkdwn.
    `claimable`: with a Claim button (kit/slack_claim.py), for a channel whose Slack app
    sends its clicks to deskbell (it has a `signing_secret`)."""
    request = message.request
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": truncate(header, HEADER_LIMIT)}},
        {"type": "section", "text": {"type": "mrkdwn", "text": fit_escaped(body, SECTION_LIMIT)}},
    ]
    who = _fields([(item.label, item.value) for item in details(request)])
    if who:
        blocks.append({"type": "section", "fields": who[:FIELDS_PER_SECTION]})
    metadata = _fields([(item.label, item.value) for item in metadata_items(request)])
    for start in range(0, len(metadata), FIELDS_PER_SECTION):
        section: dict[str, Any] = {"type": "section"}
        if start == 0:
            section["text"] = {"type": "mrkdwn", "text": "*Metadata*"}
        section["fields"] = metadata[start : start + FIELDS_PER_SECTION]
        blocks.append(section)
    buttons = [claim_button(message.request_id)] if claimable else []
    url = request.conversation_url
    if url and len(url) <= BUTTON_URL_LIMIT:
        button = {
            "type": "button",
            "text": {"type": "plain_text", "text": "Open the conversation"},
            "url": url,
            "action_id": "deskbell-open-conversation",
        }
        buttons.append(button)
    elif url:  # too long for a button: a link Slack will at least show
        link = fit_escaped(slack_link(url, "Open the conversation"), SECTION_LIMIT, ELLIPSIS)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": link}})
    if buttons:
        actions: dict[str, Any] = {"type": "actions", "elements": buttons}
        if claimable:
            actions["block_id"] = CLAIM_BLOCK_ID
        blocks.append(actions)
    footer = escape_mrkdwn(f"request {message.request_id} via deskbell")
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": footer}]})
    return blocks


def build_payload(message: Message, settings: SlackSettings) -> dict[str, Any]:
    """`text` (the notification fallback) and `blocks`, from the channel's templates."""

    def render(name: str) -> str:
        return templates.render(name, message, settings.TEMPLATES, settings.template).strip()

    text = fit_escaped(render("text"), TEXT_LIMIT) or escape_mrkdwn(message.request.topic)
    claimable = settings.signing_secret is not None
    header, body = render("header") or ELLIPSIS, render("body") or ELLIPSIS
    blocks = build_blocks(message, header, body, claimable=claimable)
    return {"text": text, "blocks": blocks}


class SlackSettings(ChannelSettings):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["slack"]
    webhook_url: SecretStr | None = None
    token: SecretStr | None = None
    channel: str | None = None
    api_url: str = DEFAULT_API_URL
    # The Slack app's signing secret: its messages get a Claim button, and clicks on it
    # (POST /v1/slack/interactions) are checked with it.
    signing_secret: SecretStr | None = None

    TEMPLATES: ClassVar[Mapping[str, TemplateSpec]] = {
        "header": TemplateSpec("slack_header.txt"),  # plain_text: Slack does not parse it
        "body": TemplateSpec("slack_body.txt", Mode.MRKDWN),
        "text": TemplateSpec("slack_text.txt", Mode.MRKDWN),
    }
    EXAMPLE: ClassVar[Mapping[str, Any]] = {
        "type": "slack",
        "webhook_url": "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
    }

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: SecretStr | None) -> SecretStr | None:
        # The message never repeats the value: it is a credential.
        if value is not None and not _is_http_url(value.get_secret_value()):
            raise ValueError("must be an http(s) URL such as https://hooks.slack.com/services/...")
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not _is_http_url(value):
            raise ValueError("must be an http(s) URL such as https://slack.com/api")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_transport(self) -> SlackSettings:
        if (self.webhook_url is None) == (self.token is None):
            raise ValueError("set either webhook_url, or token and channel (the Web API)")
        if self.token is not None and not self.channel:
            raise ValueError("channel: required with token (a channel id such as C0123456789)")
        if self.webhook_url is not None and self.channel:
            raise ValueError("channel: only with token; a webhook's URL fixes its channel")
        return self

    def trusts_response_url(self, url: str) -> bool:
        """A click's `response_url` we may POST to: https on slack.com, or the origin this
        channel already sends to (`api_url`, the webhook's), which is how a local fake Slack
        is configured in tests. Anything else could make deskbell a request forwarder."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if parts.scheme == "https" and (host == "slack.com" or host.endswith(".slack.com")):
            return True
        own = [self.api_url] + ([self.webhook_url.get_secret_value()] if self.webhook_url else [])
        return _origin(url) is not None and _origin(url) in {_origin(item) for item in own}


def _origin(url: str) -> tuple[str, str, int | None] | None:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port


def _is_http_url(value: str) -> bool:
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def classify_api_answer(response: httpx.Response, now: datetime | None = None) -> SendResult:
    """A Web API answer: HTTP status first (429 with Retry-After, 5xx), then `ok`/`error`."""
    if not 200 <= response.status_code < 300:
        return classify_http(response.status_code, response.headers, response.text, now)
    try:
        answer = response.json()
    except ValueError:
        return SendResult.transient("Slack API answered with something that is not JSON")
    if not isinstance(answer, dict):
        return SendResult.transient("Slack API answered with an unexpected JSON value")
    if answer.get("ok") is True:
        return SendResult.sent()
    error = str(answer.get("error") or "unknown_error")[:100]
    if error in TRANSIENT_API_ERRORS:
        return SendResult.transient(f"Slack API error: {error}")
    return SendResult.permanent(f"Slack API error: {error}")


class SlackChannel:
    """Posts one message per send, through the webhook or `chat.postMessage`."""

    def __init__(self, name: str, settings: SlackSettings, ctx: ChannelContext) -> None:
        self.name = name
        self._settings = settings
        self._ctx = ctx

    async def send(self, message: Message) -> SendResult:
        settings = self._settings
        try:
            with building():
                payload = build_payload(message, settings)
                if settings.token is not None:
                    payload = {**payload, "channel": settings.channel, "unfurl_links": False}
                body = orjson.dumps(payload)
        except UnsendableMessage as exc:
            return SendResult.unsendable(exc)
        if settings.token is not None:
            return await self._post_api(body, settings.token.get_secret_value())
        assert settings.webhook_url is not None  # the settings model guarantees one transport
        url = settings.webhook_url.get_secret_value()
        try:
            response = await post(
                self._ctx.http,
                url,
                content=body,
                headers=JSON_HEADERS,
                timeouts=http_timeout(settings),
            )
        except httpx.HTTPError as exc:
            return _scrubbed(classify_http_error(exc), url)
        result = classify_http(
            response.status_code, response.headers, response.text, now=self._ctx.clock.now()
        )
        return _scrubbed(result, url)

    async def update(
        self,
        payload: Mapping[str, Any],
        *,
        response_url: str | None = None,
        channel_id: str | None = None,
        ts: str | None = None,
    ) -> SendResult:
        """Replace a message this channel posted (a click's answer): `chat.update` with the
        bot token when the Web API posted it (`channel_id` and `ts` known), else through the
        click's `response_url` (`replace_original`)."""
        settings = self._settings
        if settings.token is not None and channel_id and ts:
            body = orjson.dumps({**payload, "channel": channel_id, "ts": ts})
            return await self._post_api(body, settings.token.get_secret_value(), "chat.update")
        return await self.respond(response_url, {**payload, "replace_original": True})

    async def respond(self, response_url: str | None, payload: Mapping[str, Any]) -> SendResult:
        """POST to a click's `response_url`: replace the message, or an ephemeral note to the
        person who clicked (`response_type: ephemeral`)."""
        if not response_url or not self._settings.trusts_response_url(response_url):
            return SendResult.permanent("response_url is not a Slack URL")
        try:
            response = await self._ctx.http.post(
                response_url,
                content=orjson.dumps(payload),
                headers=JSON_HEADERS,
                timeout=http_timeout(self._settings),
            )
        except httpx.HTTPError as exc:
            return _scrubbed(classify_http_error(exc), response_url)
        result = classify_http(response.status_code, response.headers, response.text)
        return _scrubbed(result, response_url)

    async def _post_api(
        self, body: bytes, token: str, method: str = "chat.postMessage"
    ) -> SendResult:
        try:
            response = await self._ctx.http.post(
                f"{self._settings.api_url}/{method}",
                content=body,
                headers={**JSON_HEADERS, "Authorization": f"Bearer {token}"},
                timeout=http_timeout(self._settings),
            )
        except httpx.HTTPError as exc:
            return _scrubbed(classify_http_error(exc), token)
        return _scrubbed(classify_api_answer(response, self._ctx.clock.now()), token)


def _scrubbed(result: SendResult, secret: str) -> SendResult:
    if result.error is None:
        return result
    return dataclasses.replace(result, error=redact(result.error, secret))


CHANNEL_TYPE = ChannelType(name="slack", settings_model=SlackSettings, factory=SlackChannel)
