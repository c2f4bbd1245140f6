"""Sending the bot its events (SPEC §9): the deliveries on the reserved channel `callback`.

An event delivery (storage/events.py) is claimed, retried and dead-lettered like any other;
the worker hands it to `CallbackSender` instead of a config channel (delivery/worker.py).
Each send POSTs the webhook channel's envelope

    {"type": "request.claimed", "timestamp": "<when it happened>", "data": {...}}

to the request's `callback_url` (fixed at accept), signed the Standard Webhooks way with its
source's `callback_secret` as the config holds it now: `webhook-id` is the delivery id (the
same on every retry, so the bot can drop a repeat), `webhook-timestamp` the send time and
`webhook-signature` made by the `standardwebhooks` reference library, as channels/webhook.py
does. The URL goes through the same SSRF guard (kit/netguard.py, unless the source sets
`allow_private_networks`), the one HTTP client and the shared status classifier, so 408/429/5xx
are retried on the retry policy and any other answer is dead with its status.

A request whose source has left the config, or has no `callback_secret` any more, cannot be
signed for: its events go dead at once, saying so.

Events are their own deliveries with their own slots (`CALLBACK_SETTINGS.max_concurrency` per
worker process) and no breaker: one slow bot neither holds the slots of people's
notifications nor pauses another bot's events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import httpx
import orjson
from standardwebhooks.webhooks import Webhook

from deskbell import __version__
from deskbell.callbacks import CALLBACK_CHANNEL
from deskbell.channels.base import (
    ChannelSettings,
    Message,
    SendResult,
    building,
    classify_http,
    classify_http_error,
    http_timeout,
)
from deskbell.channels.kit.netguard import BlockedDestination, UnresolvableHost, pin
from deskbell.channels.kit.text import redact
from deskbell.clock import Clock
from deskbell.config.schema import SourceConfig
from deskbell.errors import UnsendableMessage
from deskbell.storage.engine import Database
from deskbell.storage.events import EventToSend, event_to_send

# The retry policy, timeouts and slots of every event delivery (the channels' defaults,
# SPEC §5, with a shorter send: a bot's endpoint should answer at once).
CALLBACK_SETTINGS = ChannelSettings(type="callback", timeout=10.0, max_concurrency=4)

SourceLookup = Callable[[], Mapping[str, SourceConfig]]


def event_body(event: EventToSend) -> bytes:
    """The envelope: `timestamp` is when the event happened (Standard Webhooks' meaning)."""
    occurred = event.occurred_at.isoformat().replace("+00:00", "Z")
    return orjson.dumps({"type": event.type, "timestamp": occurred, "data": event.data})


class CallbackSender:
    """Channel-shaped (`send(message) -> SendResult`): reads the event of the delivery it is
    given, signs it for the request's source and POSTs it to the request's callback_url."""

    name = CALLBACK_CHANNEL

    def __init__(
        self,
        db: Database,
        http: httpx.AsyncClient,
        clock: Clock,
        sources: SourceLookup,
        settings: ChannelSettings = CALLBACK_SETTINGS,
    ) -> None:
        self.db = db
        self.http = http
        self.clock = clock
        self.sources = sources  # the active config's `sources:`, read at each send
        self.settings = settings

    async def send(self, message: Message) -> SendResult:
        event = await event_to_send(self.db, message.delivery_id)
        if event is None:
            return SendResult.permanent("not an event delivery")
        if event.callback_url is None:
            return SendResult.permanent("the request has no callback_url")
        source = self.sources().get(event.source) if event.source is not None else None
        if source is None:
            return SendResult.permanent(
                f"source {event.source!r} is not in the active config: its events cannot be "
                "signed (sources.<name>.callback_secret)"
            )
        secret = source.callback_secret
        if secret is None:
            return SendResult.permanent(
                f"source {event.source!r} has no callback_secret: its events cannot be signed"
            )
        url = event.callback_url
        result = await self._post(
            event, url, Webhook(secret.get_secret_value()), source.allow_private_networks
        )
        return dataclasses.replace(result, error=redact(result.error, url))

    async def _post(
        self, event: EventToSend, url: str, signer: Webhook, allow_private: bool
    ) -> SendResult:
        now = self.clock.now()
        try:
            with building():
                body = event_body(event)
        except UnsendableMessage as exc:
            return SendResult.unsendable(exc)
        try:
            target = await pin(url, allow_private)
        except BlockedDestination as exc:
            return SendResult.permanent(str(exc))
        except UnresolvableHost as exc:
            return SendResult.transient(str(exc))
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": f"deskbell/{__version__}",
            "webhook-id": event.delivery_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(event.delivery_id, now, body.decode()),
        }
        extensions = {"sni_hostname": target.sni} if target.sni else None
        try:
            response = await self.http.post(
                target.url,
                content=body,
                headers=headers,
                timeout=http_timeout(self.settings),
                follow_redirects=False,
                extensions=extensions,
            )
        except httpx.HTTPError as exc:
            return _scrubbed(classify_http_error(exc), str(target.url))
        result = classify_http(response.status_code, response.headers, response.text, now=now)
        return _scrubbed(result, str(target.url))


def _scrubbed(result: SendResult, pinned_url: str) -> SendResult:
    return dataclasses.replace(result, error=redact(result.error, pinned_url))


def callback_channel(
    db: Database,
    http: httpx.AsyncClient,
    clock: Clock,
    sources: SourceLookup,
    settings: ChannelSettings = CALLBACK_SETTINGS,
) -> tuple[CallbackSender, ChannelSettings]:
    """What `WorkerPool(callbacks=...)` takes: the sender and the settings its deliveries
    are retried by (`settings.timeout` bounds the whole send, as for channels)."""
    return CallbackSender(db, http, clock, sources, settings), settings
