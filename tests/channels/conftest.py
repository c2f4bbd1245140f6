"""Fixtures for channel tests: the real local peers from tests.fakes, one HTTP client, and a
context with a StringIO console. Each fixture closes what it opens, because pytest turns a
ResourceWarning from a leaked socket into a failure."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from deskbell.channels.base import ChannelContext
from tests.fakes.slack import FakeSlack
from tests.fakes.smtp import FakeSMTP


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack() as slack:
        yield slack


@pytest.fixture
def fake_smtp() -> Iterator[FakeSMTP]:
    with FakeSMTP() as smtp:
        yield smtp


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def console() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def ctx(http_client: httpx.AsyncClient, console: io.StringIO) -> ChannelContext:
    return ChannelContext(http=http_client, console=console)
