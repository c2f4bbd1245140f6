"""Console channel: what it writes, where, and what a broken stream means."""

from __future__ import annotations

import io

import httpx
import pytest

from deskbell.channels.base import ChannelContext, Message
from deskbell.channels.console import CHANNEL_TYPE, RULE, ConsoleChannel, printable, render
from deskbell.models import Outcome
from tests.channels.contract import ConsolePeer, Peer
from tests.fakes import make_message


def contract_peer() -> Peer:
    """For tests/channels/test_contract.py: a StringIO stream; a closed one fails the write."""
    return ConsolePeer()


def build_check(message: Message) -> None:
    """For tests/channels/test_every_body_sends.py: the text renders and any stream takes it."""
    settings = CHANNEL_TYPE.settings_model.model_validate(CHANNEL_TYPE.settings_model.EXAMPLE)
    text = render(message, settings)
    for encoding in ("ascii", "utf-8", "cp1252"):
        stream = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
        stream.write(printable(text, stream))
        stream.flush()


def channel(ctx: ChannelContext) -> ConsoleChannel:
    settings = CHANNEL_TYPE.settings_model.model_validate({"type": "console"})
    built = CHANNEL_TYPE.factory("ops-console", settings, ctx)
    assert isinstance(built, ConsoleChannel)
    return built


async def test_writes_a_readable_block(ctx: ChannelContext, console: io.StringIO) -> None:
    message = make_message(
        {
            "topic": "pricing",
            "description": "Needs a discount\nfor 40 seats",
            "customer": {"name": "Ana", "email": "ana@example.com"},
            "conversation_url": "https://chat.example.com/c/9",
            "language": "es",
            "metadata": {"plan": "pro", "trial": True},
        },
        channel="ops-console",
        request_id="req-9",
    )

    result = await channel(ctx).send(message)

    assert result.outcome is Outcome.SENT
    lines = console.getvalue().splitlines()
    assert lines[0] == RULE
    assert lines[-1] == RULE
    assert lines[1] == "[deskbell -> ops-console]"
    assert lines[2] == "Assistance requested: pricing"
    for expected in (
        "Needs a discount",
        "for 40 seats",
        "Customer: Ana",
        "Email: ana@example.com",
        "Language: es",
        "Conversation: https://chat.example.com/c/9",
        "  plan: pro",
        "  trial: true",
    ):
        assert expected in lines
    assert any(line.startswith("Request req-9 ") for line in lines)


async def test_each_send_is_its_own_block(ctx: ChannelContext, console: io.StringIO) -> None:
    sender = channel(ctx)
    await sender.send(make_message({"topic": "sales", "description": "first"}))
    await sender.send(make_message({"topic": "sales", "description": "second"}))

    text = console.getvalue()
    assert text.count(RULE) == 4
    assert text.index("first") < text.index("second")


async def test_defaults_to_stdout(
    http_client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await channel(ChannelContext(http=http_client)).send(make_message())

    assert result.outcome is Outcome.SENT
    assert "Assistance requested: sales" in capsys.readouterr().out


async def test_a_character_the_stream_cannot_encode_is_escaped_not_failed() -> None:
    """An emoji on an ASCII console raised UnicodeEncodeError on every attempt (transient);
    it is written as a backslash escape instead."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="ascii")
    async with httpx.AsyncClient() as http:
        ascii_console = channel(ChannelContext(http=http, console=stream))
        message = make_message({"topic": "sales", "description": "Hola \U0001f600 José"})

        result = await ascii_console.send(message)

    assert result.outcome is Outcome.SENT
    assert "Hola \\U0001f600 Jos\\xe9" in raw.getvalue().decode("ascii")
