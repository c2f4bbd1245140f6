"""One bad request never stalls a channel (issue 14), through the real app and WorkerPool.

Before: six requests whose webhook body could not be serialised, or four whose customer email
could not be encoded, were each retried as transient and opened the channel's breaker, and a
good request then waited minutes. Now a message that cannot be built goes `dead` at its first
attempt with the reason, its fallback is sent, and the channel's breaker never hears of it; the
two bodies that caused it are refused at ingest (422) or sent.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import httpx
import pytest

from deskbell.channels.base import ChannelContext, ChannelSettings, ChannelType, Message, SendResult
from deskbell.errors import UnsendableMessage
from deskbell.models import DeliveryStatus, StoredRequest
from deskbell.settings import Settings
from deskbell.wiring import Runtime, build_runtime
from tests.conftest import running_app, wait_for_request
from tests.fakes.smtp import FakeSMTP

URL = "/v1/assistance-requests"
# Two transient failures would open the breaker for an hour: a good request sent in seconds
# after the poisoned ones shows that they were never counted.
BREAKER = "breaker: {failures: 2, cool_down: 3600}"


class PickySettings(ChannelSettings):
    type: Literal["picky"]


class Picky:
    """A channel that cannot build a message whose description starts with `poison` (as the
    webhook could not serialise a 70-bit integer); it writes the others to the console."""

    def __init__(self, name: str, settings: PickySettings, ctx: ChannelContext) -> None:
        self.name = name
        self._console = ctx.console

    async def send(self, message: Message) -> SendResult:
        description = message.request.description
        if description.startswith("poison"):
            raise UnsendableMessage(f"cannot render/encode: {description}")
        assert self._console is not None
        self._console.write(f"picky sent: {description}\n")
        return SendResult.sent()


PICKY = ChannelType(name="picky", settings_model=PickySettings, factory=Picky)


def runtime_for(config: str, database_url: str, write_config: Callable[[str], Path]) -> Runtime:
    settings = Settings(database_url=database_url, config=write_config(config), poll_seconds=0.05)
    return build_runtime(settings, extra_channel_types=[PICKY], console=io.StringIO())


async def post(client: httpx.AsyncClient, body: dict[str, object]) -> str:
    answer = await client.post(URL, json=body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def settled(stored: StoredRequest) -> bool:
    return all(d.status in (DeliveryStatus.SENT, DeliveryStatus.DEAD) for d in stored.deliveries)


async def test_unsendable_messages_go_dead_and_fall_back_without_opening_the_breaker(
    database_url: str, write_config: Callable[[str], Path]
) -> None:
    config = f"""
channels:
  picky:
    type: picky
    {BREAKER}
  backup:
    type: console
routes:
  - match: {{topic: sales}}
    to: [picky]
    fallback: backup
"""
    runtime = runtime_for(config, database_url, write_config)
    async with running_app(runtime) as client:
        poisoned = [
            await post(client, {"topic": "sales", "description": f"poison {n}"}) for n in range(4)
        ]
        for request_id in poisoned:
            stored = await wait_for_request(
                runtime, request_id, lambda s: len(s.deliveries) == 2 and settled(s)
            )
            dead, fallback = stored.deliveries
            assert (dead.channel, dead.status, dead.attempts) == ("picky", DeliveryStatus.DEAD, 1)
            assert dead.last_error is not None
            assert dead.last_error.startswith("cannot render/encode: poison")
            assert (fallback.channel, fallback.status) == ("backup", DeliveryStatus.SENT)

        good = await post(client, {"topic": "sales", "description": "a good one"})
        stored = await wait_for_request(runtime, good, settled, timeout=5.0, what="good one sent")
    assert [d.status for d in stored.deliveries] == [DeliveryStatus.SENT]


@pytest.mark.parametrize("smtputf8", [False, True], ids=["plain", "smtputf8"])
async def test_non_ascii_customer_emails_are_sent_and_oversized_integers_refused(
    sqlite_url: str, write_config: Callable[[str], Path], smtputf8: bool
) -> None:
    with FakeSMTP(smtputf8=smtputf8) as smtp:
        config = f"""
channels:
  pricing-email:
    type: email
    smtp_url: {smtp.url}
    from: deskbell@example.com
    to: [pricing@example.com]
    {BREAKER}
routes:
  - match: {{topic: pricing}}
    to: [pricing-email]
"""
        runtime = runtime_for(config, sqlite_url, write_config)
        async with running_app(runtime) as client:
            refused = await client.post(
                URL, json={"topic": "pricing", "description": "hi", "metadata": {"id": 2**70}}
            )
            assert refused.status_code == 422
            assert "send a large id as a string" in refused.text

            addresses = ["josé@example.com", "ana@exämple.com", "用户@例子.广告", "bo@example.com"]
            ids = [
                await post(
                    client,
                    {"topic": "pricing", "description": "hi", "customer": {"email": address}},
                )
                for address in addresses
            ]
            for request_id in ids:
                stored = await wait_for_request(runtime, request_id, settled, what="email sent")
                assert [d.status for d in stored.deliveries] == [DeliveryStatus.SENT]
        assert len(smtp.messages) == len(addresses)
