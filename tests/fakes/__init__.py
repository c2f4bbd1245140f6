"""Real local peers for tests (a Slack webhook, an SMTP server) and the two helpers every test
that talks to them needs: waiting on a condition with a deadline, and building a Message.

Tests never sleep to synchronise: they poll a condition until a deadline and fail loudly with
what they were waiting for. `wait_until` blocks (use it from sync tests or threads);
`wait_until_async` yields to the event loop between polls, so an app or a worker running in the
same loop keeps making progress while the test waits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from deskbell.channels.base import Message
from deskbell.models import AssistanceRequestIn

DEFAULT_TIMEOUT = 5.0
POLL_INTERVAL = 0.01


def wait_until(
    condition: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT, what: str = "condition"
) -> None:
    """Return as soon as `condition()` is true; raise AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(POLL_INTERVAL)


async def wait_until_async(
    condition: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT, what: str = "condition"
) -> None:
    """Like `wait_until`, but lets the running event loop work between polls."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL)


async def wait_until_true(
    predicate: Callable[[], Awaitable[bool]],
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "condition",
) -> None:
    """Like `wait_until_async` for a predicate that must itself await (a database query)."""
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL * 5)


def make_message(
    request: Mapping[str, Any] | None = None,
    *,
    channel: str = "test-channel",
    delivery_id: str = "dlv-0001",
    request_id: str = "req-0001",
    attempt: int = 1,
) -> Message:
    """A Message around `AssistanceRequestIn.model_validate(request)`; the default request is
    the smallest valid one (topic `sales`)."""
    body = dict(request) if request is not None else {"topic": "sales", "description": "Hello"}
    return Message(
        delivery_id=delivery_id,
        request_id=request_id,
        channel=channel,
        request=AssistanceRequestIn.model_validate(body),
        accepted_at=datetime(2026, 1, 1, 12, 0, tzinfo=UTC),
        attempt=attempt,
    )
