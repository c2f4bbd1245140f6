"""A message that cannot be built for a channel is the message's fault, not the channel's.

Issue 14: an integer beyond 64 bits in `metadata` passed ingest, then the webhook channel's
`orjson.dumps` raised on every attempt; `send_once` recorded a crash as transient, so it was
retried and fed the channel's breaker. Now ingest refuses what no JSON peer reads exactly
(I-JSON), a channel reports a failed build step as permanent, and `send_once` records
`UnsendableMessage` as permanent while an unexpected crash stays transient (a bug of ours).
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from deskbell.channels.base import (
    ChannelContext,
    ChannelSettings,
    Message,
    SendResult,
    building,
    send_once,
)
from deskbell.channels.kit.http import ChannelHTTPClient
from deskbell.channels.webhook import CHANNEL_TYPE as WEBHOOK
from deskbell.errors import UnsendableMessage
from deskbell.models import IJSON_MAX_INT, AssistanceRequestIn, Outcome
from tests.fakes import make_message
from tests.fakes.receiver import Receiver

VALIDATOR = AssistanceRequestIn.__pydantic_validator__
SETTINGS = ChannelSettings(type="test", timeout=1.0)


def ingest(metadata_json: bytes) -> AssistanceRequestIn:
    body = b'{"topic": "sales", "description": "hi", "metadata": {"id": ' + metadata_json + b"}}"
    return VALIDATOR.validate_json(body)  # type: ignore[no-any-return]  # pydantic-core


@pytest.mark.parametrize(
    "number", [IJSON_MAX_INT + 1, -IJSON_MAX_INT - 1, 2**64, 2**70, 10**400, -(2**63)]
)
def test_ingest_refuses_integers_outside_ijson_with_the_way_out(number: int) -> None:
    with pytest.raises(ValidationError) as caught:
        ingest(str(number).encode())
    [error] = caught.value.errors()
    assert error["loc"] == ("metadata", "id")
    assert "send a large id as a string" in error["msg"]


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (str(IJSON_MAX_INT).encode(), IJSON_MAX_INT),
        (str(-IJSON_MAX_INT).encode(), -IJSON_MAX_INT),
        (b'"18446744073709551617"', "18446744073709551617"),  # as a string: fine
        (b"true", True),
        (b"1.5e300", 1.5e300),
    ],
)
def test_ingest_keeps_what_every_json_peer_reads(raw: bytes, kept: object) -> None:
    value = ingest(raw).metadata["id"]
    assert value == kept
    assert type(value) is type(kept)  # not quietly turned into a float


@pytest.mark.parametrize("escape", [rb"\ud800", rb"\udfff", rb"x\ud800y"])
def test_ingest_refuses_lone_surrogates(escape: bytes) -> None:
    # No channel could encode one as UTF-8; the JSON parser refuses it (400/422 at ingest).
    with pytest.raises(ValidationError):
        VALIDATOR.validate_json(b'{"topic": "sales", "description": "' + escape + b'"}')


def unvalidated(metadata: dict[str, str | int | float | bool]) -> Message:
    """A message whose request skipped validation, as one stored before the I-JSON rule."""
    request = AssistanceRequestIn.model_construct(
        topic="sales", description="hi", metadata=metadata, customer=None
    )
    message = make_message()
    return Message(
        message.delivery_id, message.request_id, message.channel, request, message.accepted_at
    )


async def test_a_webhook_body_that_cannot_be_serialised_is_permanent_and_not_sent() -> None:
    async with ChannelHTTPClient() as http:
        with Receiver() as receiver:
            settings = WEBHOOK.settings_model.model_validate(
                {"type": "webhook", "url": receiver.url, "allow_private_networks": True}
            )
            channel = WEBHOOK.factory("crm", settings, ChannelContext(http=http))

            result = await channel.send(unvalidated({"id": 2**70}))

            assert result.outcome is Outcome.PERMANENT
            assert result.error == "cannot render/encode: TypeError: Integer exceeds 64-bit range"
            assert receiver.requests == []


def test_building_turns_any_error_into_unsendable_message() -> None:
    expected = r"^cannot render/encode: ValueError: bad$"
    with pytest.raises(UnsendableMessage, match=expected), building():
        raise ValueError("bad")


class Unsendable:
    name = "unsendable"

    async def send(self, message: Message) -> SendResult:
        raise UnsendableMessage("cannot encode address 'x': no SMTPUTF8")


class Crashes:
    name = "crashes"

    async def send(self, message: Message) -> SendResult:
        raise KeyError("our bug")


async def test_send_once_records_unsendable_message_as_permanent() -> None:
    result = await send_once(Unsendable(), SETTINGS, make_message())
    assert result == SendResult.permanent("cannot encode address 'x': no SMTPUTF8")


async def test_send_once_keeps_an_unexpected_crash_transient() -> None:
    result = await send_once(Crashes(), SETTINGS, make_message())
    assert result.outcome is Outcome.TRANSIENT
    assert result.error == "channel error: KeyError: 'our bug'"
