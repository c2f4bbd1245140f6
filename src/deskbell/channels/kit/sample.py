"""Sample requests and test sends: what `deskbell config check` renders every template with,
and what `POST /v1/channels/{name}/test` and `deskbell channels test NAME` send.

Two samples, because templates break in two ways: the full one sets every optional field (a
template that mishandles a value shows up), the minimal one sets none (a template that assumes
a customer or a conversation link shows up).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from deskbell.channels.base import Channel, ChannelSettings, Message, send_once
from deskbell.channels.kit import render
from deskbell.models import AssistanceRequestIn, Outcome

SAMPLE_TOPIC = "deskbell-test"
FULL_SAMPLE = {
    "topic": SAMPLE_TOPIC,
    "description": "Test notification from deskbell: a customer would like to talk to a person.",
    "customer": {
        "id": "cus_0001",
        "name": "Ana Example",
        "email": "ana@example.com",
        "phone": "+34 600 000 000",
    },
    "conversation_url": "https://chat.example.com/c/test",
    "language": "en",
    "metadata": {"plan": "pro", "seats": 40, "test": True},
}
MINIMAL_SAMPLE = {"topic": SAMPLE_TOPIC, "description": "Test notification from deskbell."}


def sample_messages(channel: str, now: datetime) -> dict[str, Message]:
    """`full` and `minimal` sample messages for `channel`, with fresh `test-` ids."""
    return {
        kind: Message(
            delivery_id=f"test-{uuid.uuid4().hex[:16]}",
            request_id=f"test-{uuid.uuid4().hex[:16]}",
            channel=channel,
            request=AssistanceRequestIn.model_validate(body),
            accepted_at=now,
        )
        for kind, body in (("full", FULL_SAMPLE), ("minimal", MINIMAL_SAMPLE))
    }


def check_channel_templates(
    channels: Mapping[str, ChannelSettings], now: datetime
) -> tuple[int, list[str]]:
    """Render every template of every channel against both samples: (templates checked,
    problems as `channels.NAME.template.T ...` lines)."""
    checked, problems = 0, []
    for name, settings in channels.items():
        checked += len(settings.TEMPLATES)
        found = render.check_templates(
            settings.TEMPLATES, settings.template, sample_messages(name, now)
        )
        problems += [f"channels.{name}: {problem}" for problem in found]
    return checked, problems


@dataclass(frozen=True)
class SampleSend:
    """What a test send reports."""

    channel: str
    type: str
    status: Outcome
    duration_ms: float
    error: str | None
    retry_after: float | None


async def send_sample(
    name: str, channel: Channel, settings: ChannelSettings, now: datetime
) -> SampleSend:
    """Send the full sample through `channel` once, the way a delivery is sent (`send_once`:
    bounded by its timeout, a crash reported as a transient failure)."""
    message = sample_messages(name, now)["full"]
    started = time.perf_counter()
    result = await send_once(channel, settings, message)
    duration = round((time.perf_counter() - started) * 1000, 1)
    return SampleSend(
        channel=name,
        type=settings.type,
        status=result.outcome,
        duration_ms=duration,
        error=result.error,
        retry_after=result.retry_after,
    )
