"""An example third-party deskbell channel: posts each request as plain text to an ntfy-style
topic URL (`POST https://ntfy.sh/<topic>`, body = the message, `Title` header).

Config block, once this package is installed next to deskbell:

    ops-phone:
      type: ntfy
      url: https://ntfy.sh/my-team-handoffs
      priority: 4
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import httpx
from pydantic import ConfigDict, Field, SecretStr

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
from deskbell.channels.kit import render as templates
from deskbell.channels.kit.render import TemplateSpec
from deskbell.channels.kit.text import redact, single_line
from deskbell.errors import TemplateError


class NtfySettings(ChannelSettings):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["ntfy"]
    url: SecretStr  # the topic URL is all it takes to post: a secret
    priority: int = Field(default=3, ge=1, le=5)

    # Reuse deskbell's default plain-text template; users may override `body` in config.
    TEMPLATES: ClassVar[Mapping[str, TemplateSpec]] = {"body": TemplateSpec("message.txt")}
    # A minimal valid block: deskbell's contract test builds the type from it.
    EXAMPLE: ClassVar[Mapping[str, Any]] = {"type": "ntfy", "url": "https://ntfy.sh/my-topic"}


class NtfyChannel:
    def __init__(self, name: str, settings: NtfySettings, ctx: ChannelContext) -> None:
        self.name = name
        self._settings = settings
        self._ctx = ctx

    async def send(self, message: Message) -> SendResult:
        settings = self._settings
        try:
            body = templates.render("body", message, settings.TEMPLATES, settings.template)
        except TemplateError as exc:
            return SendResult.permanent(str(exc))
        url = settings.url.get_secret_value()
        headers = {
            "Title": single_line(f"Assistance requested: {message.request.topic}", 200),
            "Priority": str(settings.priority),
        }
        try:
            response = await self._ctx.http.post(
                url, content=body.encode(), headers=headers, timeout=http_timeout(settings)
            )
        except httpx.HTTPError as exc:
            result = classify_http_error(exc)
        else:
            result = classify_http(response.status_code, response.headers, response.text)
        return dataclasses.replace(result, error=redact(result.error, url))


CHANNEL_TYPE = ChannelType(name="ntfy", settings_model=NtfySettings, factory=NtfyChannel)
