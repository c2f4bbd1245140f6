"""Console channel: prints each request to a stream. For demos and local development.

Config block (no keys of its own):

    ops-console:
      type: console

It writes to `ChannelContext.console` when one is given (tests hand in a StringIO), else to
the process's stdout at send time, so a redirected stdout is honoured. The text is the
template `text` (default `message.txt`, which the email channel also uses), framed so
consecutive requests are easy to tell apart in a busy terminal.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import IO, Any, ClassVar, Literal

from deskbell.channels.base import (
    ChannelContext,
    ChannelSettings,
    ChannelType,
    Message,
    SendResult,
    building,
)
from deskbell.channels.kit import render as templates
from deskbell.channels.kit.render import TemplateSpec
from deskbell.errors import UnsendableMessage

RULE = "=" * 72


class ConsoleSettings(ChannelSettings):
    type: Literal["console"]

    TEMPLATES: ClassVar[Mapping[str, TemplateSpec]] = {"text": TemplateSpec("message.txt")}
    EXAMPLE: ClassVar[Mapping[str, Any]] = {"type": "console"}


def render(message: Message, settings: ConsoleSettings) -> str:
    """The framed, multi-line text one send writes (template `text`)."""
    body = templates.render("text", message, settings.TEMPLATES, settings.template)
    body = body.rstrip("\n")
    return f"{RULE}\n[deskbell -> {message.channel}]\n{body}\n{RULE}\n"


def printable(text: str, stream: IO[str]) -> str:
    """`text` as the stream can encode it: a character its encoding lacks (an emoji on an
    ASCII terminal) is written as a backslash escape (`\\U0001f600`) instead of failing the
    write on every retry."""
    encoding = getattr(stream, "encoding", None)
    if not encoding:
        return text
    return text.encode(encoding, "backslashreplace").decode(encoding)


class ConsoleChannel:
    """Writes and flushes; a write that fails (closed stream, full disk) is transient."""

    def __init__(self, name: str, settings: ConsoleSettings, ctx: ChannelContext) -> None:
        self.name = name
        self._settings = settings
        self._ctx = ctx

    async def send(self, message: Message) -> SendResult:
        stream = self._ctx.console if self._ctx.console is not None else sys.stdout
        try:
            with building():
                text = printable(render(message, self._settings), stream)
        except UnsendableMessage as exc:
            return SendResult.unsendable(exc)
        try:
            stream.write(text)
            stream.flush()
        except (OSError, ValueError) as exc:  # ValueError: I/O operation on closed file
            return SendResult.transient(f"console write failed: {exc}")
        return SendResult.sent()


CHANNEL_TYPE = ChannelType(name="console", settings_model=ConsoleSettings, factory=ConsoleChannel)
