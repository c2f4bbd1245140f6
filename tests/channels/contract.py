"""The contract every channel type keeps, checked against a real local peer: `check_contract`.

test_contract.py runs it for every registered type; test_plugins.py for the example plugin.
A channel's own test file says how to reach a local peer with a function
`contract_peer() -> Peer` (one of the peers below), so a new channel needs no edit here:

    def contract_peer() -> Peer:
        return ReceiverPeer(lambda url: {"url": url, "allow_private_networks": True})

The peer's block is laid over the settings model's own `EXAMPLE`. Every secret in it should
hold `MARK`, which must never show: not in the settings' repr or dump, not in any error.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import httpx
from pydantic import BaseModel, SecretStr

from deskbell.channels.base import ChannelContext, ChannelType, SendResult, send_once
from deskbell.channels.kit.sample import send_sample
from deskbell.models import Outcome
from tests.fakes import make_message, wait_until_async
from tests.fakes.receiver import Receiver
from tests.fakes.slack import FakeSlack
from tests.fakes.smtp import FakeSMTP

MARK = "tok-s3cr3t-7f3a"
NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
# The shared HTTP rule (channels/base.py classify_http), answer by answer.
HTTP_ANSWERS: list[tuple[int, int | None, Outcome, float | None]] = [
    (200, None, Outcome.SENT, None),
    (408, None, Outcome.TRANSIENT, None),
    (429, 7, Outcome.TRANSIENT, 7.0),
    (500, None, Outcome.TRANSIENT, None),
    (503, None, Outcome.TRANSIENT, None),
    (400, None, Outcome.PERMANENT, None),
    (404, None, Outcome.PERMANENT, None),
]


class Peer:
    """A real local far end: started as a context manager, then `block` points a channel at
    it; `received()` counts what arrived; `close()` takes it away (sends then fail)."""

    http_statuses = False  # answers by HTTP status: the classifier table applies
    console: io.StringIO | None = None
    block: dict[str, Any]

    def __enter__(self) -> Peer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def received(self) -> int:
        raise NotImplementedError

    def answer(self, status: int, retry_after: int | None = None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class ReceiverPeer(Peer):
    """tests/fakes/receiver.py at `/hooks/MARK`; `to_block(url)` is the channel's keys."""

    def __init__(
        self, to_block: Callable[[str], dict[str, Any]], *, http_statuses: bool = True
    ) -> None:
        self.http_statuses = http_statuses
        self._receiver = Receiver(path=f"/hooks/{MARK}").start()
        self.block = to_block(self._receiver.url)

    def received(self) -> int:
        return len(self._receiver.requests)

    def answer(self, status: int, retry_after: int | None = None) -> None:
        # A failure quotes the URL, as some servers do: the channel must not pass it on.
        body = "ok" if status < 300 else f"refused at {self._receiver.url}"
        self._receiver.reply_with(status, body, retry_after)

    def close(self) -> None:
        self._receiver.stop()


class SlackPeer(Peer):
    """tests/fakes/slack.py, its webhook at `/services/T000/B000/MARK`."""

    http_statuses = True

    def __init__(self, to_block: Callable[[str], dict[str, Any]]) -> None:
        self._slack = FakeSlack(path=f"/services/T000/B000/{MARK}").start()
        self.block = to_block(self._slack.url)

    def received(self) -> int:
        return len(self._slack.requests)

    def answer(self, status: int, retry_after: int | None = None) -> None:
        body = None if status < 300 else f"no_service at {self._slack.url}"
        self._slack.reply_with(status, body, retry_after)

    def close(self) -> None:
        self._slack.stop()


class SmtpPeer(Peer):
    """tests/fakes/smtp.py, logging in with password MARK."""

    def __init__(self, to_block: Callable[[str], dict[str, Any]]) -> None:
        self._smtp = FakeSMTP(credentials=("deskbell", MARK)).start()
        self.block = to_block(self._smtp.url)

    def received(self) -> int:
        return len(self._smtp.messages)

    def close(self) -> None:
        self._smtp.stop()


class ConsolePeer(Peer):
    """A StringIO handed to the channel as `ChannelContext.console`; closing it fails writes."""

    def __init__(self, block: dict[str, Any] | None = None) -> None:
        self.console = io.StringIO()
        self.block = block or {}
        self._writes = 0
        write = self.console.write

        def counted(text: str) -> int:
            self._writes += 1
            return write(text)

        self.console.write = counted  # type: ignore[method-assign]

    def received(self) -> int:
        return self._writes

    def close(self) -> None:
        self.console.close()


def secrets_of(value: Any) -> list[str]:
    """Every `SecretStr` value in a settings model, however deep."""
    if isinstance(value, SecretStr):
        return [value.get_secret_value()]
    if isinstance(value, BaseModel):
        return [s for name in type(value).model_fields for s in secrets_of(getattr(value, name))]
    if isinstance(value, dict):
        return [s for item in value.values() for s in secrets_of(item)]
    if isinstance(value, list | tuple):
        return [s for item in value for s in secrets_of(item)]
    return []


def assert_hidden(text: str | None, secrets: list[str]) -> None:
    for secret in (*secrets, MARK):
        assert secret not in (text or ""), f"a secret shows in {text!r}"


async def check_contract(kind: ChannelType, peer: Peer, http: httpx.AsyncClient) -> None:
    """Build the type from its EXAMPLE + the peer's keys, then: secrets hidden, a test send and
    a delivery arrive, HTTP answers classified by the shared rule, a gone peer is transient;
    no error ever shows a secret."""
    example = kind.settings_model.EXAMPLE
    assert example, f"{kind.settings_model.__name__} has no EXAMPLE"
    assert example.get("type") == kind.name
    settings = kind.settings_model.model_validate({**example, **peer.block})
    secrets = secrets_of(settings)
    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert_hidden(shown, secrets)

    channel = kind.factory("contract", settings, ChannelContext(http=http, console=peer.console))
    assert channel.name == "contract"

    test_send = await send_sample("contract", channel, settings, NOW)
    assert (test_send.status, test_send.error) == (Outcome.SENT, None)
    await wait_until_async(lambda: peer.received() == 1, what="the test send")

    async def send() -> SendResult:
        result = await send_once(channel, settings, make_message(channel="contract"))
        assert_hidden(result.error, secrets)
        return result

    assert (await send()).outcome is Outcome.SENT
    await wait_until_async(lambda: peer.received() == 2, what="the delivery")

    if peer.http_statuses:
        for status, retry_after, outcome, expected_wait in HTTP_ANSWERS:
            peer.answer(status, retry_after)
            result = await send()
            assert (result.outcome, result.retry_after) == (outcome, expected_wait), status
            if outcome is not Outcome.SENT:
                assert result.error is not None
                assert f"HTTP {status}" in result.error

    peer.close()
    gone = await send()
    assert gone.outcome is Outcome.TRANSIENT, gone
    assert gone.error
