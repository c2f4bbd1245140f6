"""Webhook channel against a real local receiver that verifies Standard Webhooks signatures,
and the SSRF guard against every kind of address it must refuse."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from deskbell.channels.base import ChannelContext, Message
from deskbell.channels.kit.netguard import refusal
from deskbell.channels.webhook import CHANNEL_TYPE, WebhookChannel, build_body
from deskbell.models import Outcome
from tests.channels.contract import MARK, Peer, ReceiverPeer
from tests.fakes import make_message
from tests.fakes.receiver import Received, Receiver

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
FULL = {
    "topic": "sales",
    "description": "Wants a quote",
    "customer": {"name": "Ana", "email": "ana@example.com"},
    "metadata": {"plan": "pro"},
}


def contract_peer() -> Peer:
    """For tests/channels/test_contract.py: every kind of secret the block can hold."""
    return ReceiverPeer(
        lambda url: {
            "url": url,
            "allow_private_networks": True,
            "secret": SECRET,
            "headers": {"X-Api-Key": MARK},
        }
    )


def build_check(message: Message) -> None:
    """For tests/channels/test_every_body_sends.py: the body builds, signs and parses back."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    body = build_body(message, now.isoformat())
    Webhook(SECRET).sign(message.delivery_id, now, body.decode())
    assert orjson.loads(body)["data"]["request"]["topic"] == message.request.topic


def channel(ctx: ChannelContext, **block: Any) -> WebhookChannel:
    settings = CHANNEL_TYPE.settings_model.model_validate({"type": "webhook", **block})
    built = CHANNEL_TYPE.factory("crm-webhook", settings, ctx)
    assert isinstance(built, WebhookChannel)
    return built


def independent_signature(secret: str, request: Received) -> str:
    """The Standard Webhooks algorithm written out: HMAC-SHA256 over id.timestamp.body."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = b".".join(
        [request.headers["webhook-id"].encode(), request.headers["webhook-timestamp"].encode()]
    )
    digest = hmac.new(key, signed + b"." + request.body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


async def test_signed_post_verifies_with_standard_webhooks(
    receiver: Receiver, ctx: ChannelContext
) -> None:
    sender = channel(
        ctx,
        url=receiver.url,
        secret=SECRET,
        headers={"X-Api-Key": "k-123"},
        allow_private_networks=True,
    )
    message = make_message(FULL, delivery_id="dlv-7", request_id="req-7")

    result = await sender.send(message)

    assert result.outcome is Outcome.SENT
    [request] = receiver.requests
    payload = Webhook(SECRET).verify(request.body, request.headers)  # raises if it does not
    assert request.headers["webhook-signature"] == independent_signature(SECRET, request)
    assert request.headers["webhook-id"] == "dlv-7"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-api-key"] == "k-123"
    assert payload["type"] == "assistance_request.accepted"
    assert payload["data"]["request_id"] == "req-7"
    assert payload["data"]["request"]["customer"] == {"name": "Ana", "email": "ana@example.com"}
    assert payload["data"]["request"]["metadata"] == {"plan": "pro"}


async def test_a_tampered_body_fails_verification(receiver: Receiver, ctx: ChannelContext) -> None:
    await channel(ctx, url=receiver.url, secret=SECRET, allow_private_networks=True).send(
        make_message()
    )
    [request] = receiver.requests
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(SECRET).verify(request.body.replace(b"sales", b"spam"), request.headers)


async def test_without_a_secret_nothing_is_signed(receiver: Receiver, ctx: ChannelContext) -> None:
    result = await channel(ctx, url=receiver.url, allow_private_networks=True).send(make_message())
    assert result.outcome is Outcome.SENT
    [request] = receiver.requests
    assert "webhook-signature" not in request.headers
    assert request.headers["webhook-id"] == "dlv-0001"


async def test_a_hostname_is_pinned_but_keeps_its_host_header(
    receiver: Receiver, ctx: ChannelContext
) -> None:
    url = f"http://localhost:{receiver.port}/hook"
    result = await channel(ctx, url=url, allow_private_networks=True).send(make_message())
    assert result.outcome is Outcome.SENT
    assert receiver.requests[0].headers["host"] == f"localhost:{receiver.port}"


async def test_ipv6_loopback_is_reached_when_allowed(ctx: ChannelContext) -> None:
    with Receiver(host="::1") as v6:
        result = await channel(ctx, url=v6.url, allow_private_networks=True).send(make_message())
        assert result.outcome is Outcome.SENT
        assert len(v6.requests) == 1


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:{port}/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[::1]:{port}/hook", "loopback"),
        ("http://10.0.0.1/hook", "private"),
        ("http://localhost:{port}/hook", "localhost resolves to"),
        ("http://[::ffff:127.0.0.1]:{port}/hook", "loopback"),
        ("http://0.0.0.0:{port}/hook", "unicast"),
    ],
)
async def test_ssrf_guard_refuses_by_default(
    receiver: Receiver, ctx: ChannelContext, url: str, reason: str
) -> None:
    result = await channel(ctx, url=url.format(port=receiver.port)).send(make_message())
    assert result.outcome is Outcome.PERMANENT
    assert result.error is not None
    assert result.error.startswith("refused:")
    assert reason in result.error
    assert receiver.requests == []  # nothing left the process


async def test_metadata_stays_refused_even_with_private_networks_allowed(
    ctx: ChannelContext,
) -> None:
    url = "http://169.254.169.254/latest/meta-data/"
    result = await channel(ctx, url=url, allow_private_networks=True).send(make_message())
    assert result.outcome is Outcome.PERMANENT
    assert "metadata" in (result.error or "")


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("93.184.216.34", True),
        ("2606:4700::1111", True),
        ("192.168.1.10", False),
        ("172.16.0.1", False),
        ("100.64.0.1", False),
        ("fd00::1", False),
        ("fe80::1", False),
        ("fd00:ec2::254", False),
        ("224.0.0.1", False),
    ],
)
def test_refusal_table(address: str, allowed: bool) -> None:
    assert (refusal(ipaddress.ip_address(address), allow_private=False) is None) is allowed


async def test_an_unresolvable_host_is_transient(ctx: ChannelContext) -> None:
    result = await channel(ctx, url="http://deskbell-test.invalid/hook").send(make_message())
    assert result.outcome is Outcome.TRANSIENT
    assert "cannot resolve deskbell-test.invalid" in (result.error or "")


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"url": "ftp://x.example/h"}, "http(s) URL"),
        ({"url": "https://x.example/h", "secret": "nope"}, "whsec_"),
        ({"url": "https://x.example/h", "secret": "whsec_" + "a" * 8}, "whsec_"),
        ({"url": "https://x.example/h", "headers": {"webhook-id": "x"}}, "set by deskbell"),
        ({"url": "https://x.example/h", "headers": {"Bad Name": "x"}}, "not a valid header"),
        ({"url": "https://x.example/h", "headers": {"X-A": "a\r\nB: c"}}, "one line"),
    ],
)
def test_settings_are_checked_without_echoing_secrets(block: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        CHANNEL_TYPE.settings_model.model_validate({"type": "webhook", **block})
    assert message in str(caught.value)
    assert "input_value" not in str(caught.value)
