"""The channels' HTTP client (httpx's API over aiohttp's pool) reports a failure as the kind
it is: the delivery's last error must say "refused" or "timeout" truthfully, and the shared
classifier decides from the type."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from deskbell.channels.base import classify_http_error
from deskbell.channels.kit.http import ChannelHTTPClient
from deskbell.models import Outcome

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with ChannelHTTPClient() as http:
        yield http


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/hook"


async def read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


async def test_a_refused_connection_is_a_connect_error_not_a_timeout(
    client: httpx.AsyncClient,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(httpx.ConnectError) as caught:
        await client.post(f"http://127.0.0.1:{port}/hook", json={})
    result = classify_http_error(caught.value)
    assert result.outcome is Outcome.TRANSIENT
    assert not (result.error or "").startswith("timeout")


async def test_a_server_that_never_answers_is_a_read_timeout(client: httpx.AsyncClient) -> None:
    done = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await done.wait()
        writer.close()

    server, url = await serve(silent)
    async with server:
        with pytest.raises(httpx.ReadTimeout) as caught:
            await client.post(url, json={}, timeout=httpx.Timeout(0.3, connect=5))
        done.set()
    assert classify_http_error(caught.value).error == "timeout: ReadTimeout"


async def test_a_connection_dropped_before_the_answer_is_a_read_error(
    client: httpx.AsyncClient,
) -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    server, url = await serve(hang_up)
    async with server:
        with pytest.raises(httpx.ReadError):
            await client.post(url, json={})


async def test_connections_are_reused(client: httpx.AsyncClient) -> None:
    connections = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
        writer.close()

    server, url = await serve(answer)
    async with server:
        for _ in range(5):
            assert (await client.post(url, json={})).text == "ok"
    assert connections == 1
