"""`send_once`: a channel that hangs past its timeout, or raises, is a transient failure of
that one delivery (and the hanging send is cancelled); a channel's own answer passes as is."""

from __future__ import annotations

import asyncio

from deskbell.channels.base import ChannelSettings, Message, SendResult, send_once
from deskbell.models import Outcome
from tests.fakes import make_message

FAST = ChannelSettings(type="test", timeout=0.01)


class Hangs:
    name = "hangs"

    def __init__(self) -> None:
        self.cancelled = False

    async def send(self, message: Message) -> SendResult:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


class Raises:
    name = "raises"

    async def send(self, message: Message) -> SendResult:
        raise RuntimeError("bug in the channel")


class Answers:
    name = "answers"

    async def send(self, message: Message) -> SendResult:
        return SendResult.transient("HTTP 429", retry_after=7)


async def test_a_send_past_its_timeout_is_transient_and_cancelled() -> None:
    channel = Hangs()
    result = await send_once(channel, FAST, make_message())
    assert result.outcome is Outcome.TRANSIENT
    assert result.error == "timeout after 0.01s"
    assert channel.cancelled


async def test_a_channel_that_raises_is_a_transient_failure() -> None:
    result = await send_once(Raises(), FAST, make_message())
    assert result.outcome is Outcome.TRANSIENT
    assert result.error == "channel error: RuntimeError: bug in the channel"


async def test_a_channels_answer_passes_through() -> None:
    result = await send_once(Answers(), FAST, make_message())
    assert result == SendResult.transient("HTTP 429", retry_after=7)
