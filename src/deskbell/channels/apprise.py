"""Apprise: any of the 100+ services the Apprise library knows (Teams, Discord, Telegram,
PagerDuty, SMS providers, ...) from one URL or a list of them.

Config block:

    ops-apprise:
      type: apprise
      urls: ${APPRISE_URLS}          # one URL, or a list: [discord://..., msteams://...]
      template:                      # optional overrides: title, body
        title: "Help needed: {{ topic }}"

Every URL is checked at load (Apprise must recognise its scheme and arguments); URLs carry
tokens, so they are `SecretStr` and never appear in an error. Apprise's own retries are kept at
zero and a URL asking for them (`?retry=N`) is refused: only the delivery worker retries.

Escaping: the title and body go to Apprise as plain text (`NotifyFormat.TEXT`), and each
Apprise service turns plain text into its own format with its own escaping: Slack gets `&`,
`<`, `>` as entities (so `<!channel>` is text), Telegram and HTML services HTML-escaped text,
Markdown services backslash-escaped Markdown. Services that show plain text as written
(Discord, Mattermost, `json://`) escape nothing, and a bare `@everyone` is plain text to every
escaper, so the templates render in `Mode.CHAT`: each value from the request has its mentions
(`@channel`, `@here`, `@everyone`, `@all`, `<@...>`, `<!...>`) broken by an invisible word
joiner. docs/channels.md has the table per service.

Apprise is synchronous (it uses `requests`), so a send runs in a worker thread, bounded by the
channel's `timeout` both inside Apprise and around the thread. A failed or partial notify is
transient: Apprise does not say which failures are permanent. A retry after a partial failure
notifies the URLs that already got it again (at-least-once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import apprise
from pydantic import ConfigDict, Field, SecretStr, field_validator

from deskbell.channels.base import (
    ChannelContext,
    ChannelSettings,
    ChannelType,
    Message,
    SendResult,
    building,
)
from deskbell.channels.kit import render as templates
from deskbell.channels.kit.render import Mode, TemplateSpec
from deskbell.errors import UnsendableMessage


def _asset() -> apprise.AppriseAsset:
    return apprise.AppriseAsset(default_service_retry=0)


def _instance(urls: list[str]) -> tuple[apprise.Apprise, list[int]]:
    """An Apprise object with `urls` added, and the indexes of the URLs it refused."""
    instance = apprise.Apprise(asset=_asset())
    refused = [index for index, url in enumerate(urls) if not instance.add(url)]
    return instance, refused


class AppriseSettings(ChannelSettings):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["apprise"]
    urls: list[SecretStr] = Field(min_length=1)

    TEMPLATES: ClassVar[Mapping[str, TemplateSpec]] = {
        "title": TemplateSpec("apprise_title.txt", Mode.CHAT),
        "body": TemplateSpec("message.txt", Mode.CHAT),
    }
    EXAMPLE: ClassVar[Mapping[str, Any]] = {
        "type": "apprise",
        "urls": "json://crm.example.com/hooks/deskbell",
    }

    @field_validator("urls", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | SecretStr) else value

    @field_validator("urls")
    @classmethod
    def _apprise_understands(cls, value: list[SecretStr]) -> list[SecretStr]:
        instance, refused = _instance([url.get_secret_value() for url in value])
        if refused:
            # Indexes only: the URLs hold tokens.
            raise ValueError(f"Apprise does not understand urls{refused}")
        if any(getattr(service, "retry", 0) for service in instance):
            raise ValueError("retry= in an Apprise URL is not allowed: deskbell retries")
        return value


class AppriseChannel:
    """One `notify` across every URL per send."""

    def __init__(self, name: str, settings: AppriseSettings, ctx: ChannelContext) -> None:
        self.name = name
        self._settings = settings
        self._ctx = ctx

    async def send(self, message: Message) -> SendResult:
        settings = self._settings
        try:
            with building():
                title = templates.render("title", message, settings.TEMPLATES, settings.template)
                body = templates.render("body", message, settings.TEMPLATES, settings.template)
        except UnsendableMessage as exc:
            return SendResult.unsendable(exc)
        try:
            # Apprise stops itself at `timeout`; the outer bound covers a stuck thread.
            async with asyncio.timeout(settings.timeout + 1.0):
                return await asyncio.to_thread(self._notify, title.strip(), body)
        except TimeoutError:
            return SendResult.transient(f"timeout after {settings.timeout:g}s")

    def _notify(self, title: str, body: str) -> SendResult:
        urls = [url.get_secret_value() for url in self._settings.urls]
        instance, refused = _instance(urls)
        if refused:  # validated at load; only a changed Apprise could get here
            return SendResult.permanent(f"Apprise does not understand urls{refused}")
        result = instance.notify(
            body=body,
            title=title,
            # Declared as plain text, so each service escapes it for its own markup (below).
            body_format=apprise.NotifyFormat.TEXT,
            interpret_escapes=False,  # a `\n` a customer typed stays two characters
            timeout=self._settings.timeout,
        )
        if result:
            return SendResult.sent()
        status = getattr(getattr(result, "status", None), "name", "FAILURE")
        failed = getattr(result, "failed_count", None)
        counts = f", {failed} of {len(instance)} services failed" if failed is not None else ""
        return SendResult.transient(f"apprise notify: {status}{counts}")


CHANNEL_TYPE = ChannelType(name="apprise", settings_model=AppriseSettings, factory=AppriseChannel)
