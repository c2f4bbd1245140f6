"""Fixtures for channel tests: the channels' own HTTP client (channels/kit/http.py) and a
context with a StringIO console. The real local peers `fake_slack` and `fake_smtp` come from
tests/conftest.py. Each fixture closes what it opens, because pytest turns a ResourceWarning
from a leaked socket into a failure."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator

import httpx
import pytest

from deskbell.channels.base import ChannelContext
from deskbell.channels.kit.http import ChannelHTTPClient


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with ChannelHTTPClient() as client:
        yield client


@pytest.fixture
def console() -> io.StringIO:
    return io.StringIO()


@pytest.fixture
def ctx(http_client: httpx.AsyncClient, console: io.StringIO) -> ChannelContext:
    return ChannelContext(http=http_client, console=console)
