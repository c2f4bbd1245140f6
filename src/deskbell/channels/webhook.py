"""Webhook: POST the request as JSON to any URL, signed the Standard Webhooks way.

Config block:

    crm-webhook:
      type: webhook
      url: ${CRM_WEBHOOK_URL}              # http(s); treated as a secret (tokens live in URLs)
      secret: ${CRM_WEBHOOK_SECRET}        # optional whsec_<base64>; signs every POST
      headers: {X-Api-Key: ${CRM_KEY}}     # optional extra headers, values kept secret
      allow_private_networks: false        # true to reach loopback/private/link-local hosts
      timeout: 10

Body (`Content-Type: application/json`), the Standard Webhooks envelope:

    {"type": "assistance_request.accepted", "timestamp": "<send time>",
     "data": {"request_id", "delivery_id", "channel", "accepted_at", "attempt", "request": {...}}}

Headers `webhook-id` (the delivery id: the same on every retry, so a receiver can drop a
repeat), `webhook-timestamp` (Unix seconds) and, with a secret, `webhook-signature`:
`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, computed by the `standardwebhooks`
reference library, so any Standard Webhooks verifier accepts it.

The destination is checked after DNS resolution and the connection goes to the checked
address (kit/netguard.py): a config cannot make deskbell call its own admin port, the private
network or the cloud metadata service by accident. Redirects are never followed.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import httpx
import orjson
from pydantic import ConfigDict, Field, SecretStr, field_validator
from standardwebhooks.webhooks import Webhook

from deskbell import __version__
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
from deskbell.channels.kit import whsec
from deskbell.channels.kit.http import post
from deskbell.channels.kit.netguard import BlockedDestination, Pinned, UnresolvableHost, pin
from deskbell.channels.kit.text import redact
from deskbell.errors import UnsendableMessage

EVENT_TYPE = "assistance_request.accepted"
PIN_SECONDS = 5.0  # how long a checked address is reused before resolving the host again
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)
RESERVED_HEADERS = frozenset(
    {"content-type", "content-length", "host", "transfer-encoding", "connection",
     "webhook-id", "webhook-timestamp", "webhook-signature"}
)  # fmt: skip


class WebhookSettings(ChannelSettings):
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    type: Literal["webhook"]
    url: SecretStr
    secret: SecretStr | None = None
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    allow_private_networks: bool = False

    EXAMPLE: ClassVar[Mapping[str, Any]] = {
        "type": "webhook",
        "url": "https://crm.example.com/hooks/deskbell",
    }

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        try:
            parsed = httpx.URL(value.get_secret_value())
        except httpx.InvalidURL:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("must be an http(s) URL such as https://crm.example.com/hooks/x")
        return value

    @field_validator("secret")
    @classmethod
    def _whsec(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not whsec.is_webhook_secret(value.get_secret_value()):
            raise ValueError(f"must be {whsec.RULE}")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, header in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"{name} is set by deskbell and cannot be overridden")
            if any(char in header.get_secret_value() for char in "\r\n\0"):
                raise ValueError(f"the value of {name} must be one line")
        return value


def build_body(message: Message, sent_at: str) -> bytes:
    data: dict[str, Any] = {
        "request_id": message.request_id,
        "delivery_id": message.delivery_id,
        "channel": message.channel,
        "accepted_at": message.accepted_at.isoformat(),
        "attempt": message.attempt,
        "request": message.request.model_dump(mode="json", exclude_none=True),
    }
    return orjson.dumps({"type": EVENT_TYPE, "timestamp": sent_at, "data": data})


class WebhookChannel:
    """One signed POST per send; the answer goes through the shared HTTP classifier. A refused
    destination is permanent (config), an unresolvable host transient (DNS may recover)."""

    def __init__(self, name: str, settings: WebhookSettings, ctx: ChannelContext) -> None:
        self.name = name
        self._settings = settings
        self._ctx = ctx
        secret = settings.secret
        self._signer = Webhook(secret.get_secret_value()) if secret is not None else None
        self._pinned: tuple[float, Pinned] | None = None  # (good until, monotonic; target)

    async def send(self, message: Message) -> SendResult:
        settings = self._settings
        url = settings.url.get_secret_value()
        now = self._ctx.clock.now()
        try:
            with building():
                body = build_body(message, now.isoformat())
        except UnsendableMessage as exc:
            return SendResult.unsendable(exc)
        try:
            target = await self._target(url)
        except BlockedDestination as exc:
            return SendResult.permanent(str(exc))
        except UnresolvableHost as exc:
            return SendResult.transient(str(exc))
        headers = {name: value.get_secret_value() for name, value in settings.headers.items()}
        headers.update(
            {
                "Host": target.host_header,
                "Content-Type": "application/json",
                "User-Agent": f"deskbell/{__version__}",
                "webhook-id": message.delivery_id,
                "webhook-timestamp": str(int(now.timestamp())),
            }
        )
        if self._signer is not None:
            headers["webhook-signature"] = self._signer.sign(
                message.delivery_id, now, body.decode()
            )
        try:
            response = await post(
                self._ctx.http,
                target.address,
                content=body,
                headers=headers,
                timeouts=http_timeout(settings),
                sni=target.sni,
            )
        except httpx.HTTPError as exc:
            return self._scrubbed(classify_http_error(exc), url, target.address)
        result = classify_http(response.status_code, response.headers, response.text, now=now)
        return self._scrubbed(result, url, target.address)

    async def _target(self, url: str) -> Pinned:
        """The checked address, resolved again once `PIN_SECONDS` have passed rather than on
        every send. Reusing it is as safe as the first check, since the connection still goes
        to the address that was checked; a changed config builds a new channel and resolves
        afresh."""
        now = time.monotonic()
        if self._pinned is not None and now < self._pinned[0]:
            return self._pinned[1]
        target = await pin(url, self._settings.allow_private_networks)
        self._pinned = (now + PIN_SECONDS, target)
        return target

    def _scrubbed(self, result: SendResult, *secrets: str) -> SendResult:
        error = result.error
        if error is None:
            return result
        for secret in (*secrets, *(v.get_secret_value() for v in self._settings.headers.values())):
            error = redact(error, secret)
        return dataclasses.replace(result, error=error)


CHANNEL_TYPE = ChannelType(name="webhook", settings_model=WebhookSettings, factory=WebhookChannel)
