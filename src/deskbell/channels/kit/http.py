"""The HTTP client every channel posts through: httpx's API on aiohttp's connection pool.

Channels are written against `httpx.AsyncClient` (its requests, responses, timeouts and
errors); the connections come from aiohttp's pool, which hands out an idle connection from a
per-host queue where httpcore's rescans every pooled connection on each request (the CPU
cost is in docs/performance.md). Nothing in the channels changes, including the
`sni_hostname` extension that webhook.py uses to pin a checked address (aiohttp's
`server_hostname`).

httpx-aiohttp reports every aiohttp connection error as `httpx.ConnectTimeout`, so a refused
connection would read "timeout" in a delivery's last error. `_Transport` gives them back
their kind: timeouts stay timeouts, a failed connect is `ConnectError`, a connection lost
mid-request is `ReadError`.
"""

from __future__ import annotations

import asyncio

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport, HttpxAiohttpClient

# A pool this size serves `workers` concurrent sends (the default) without queueing; more
# sends than this wait for a connection rather than open one each.
MAX_CONNECTIONS_PER_CLIENT = 256


class _Transport(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            cause = exc.__cause__
            if cause is None or isinstance(cause, asyncio.TimeoutError):
                raise  # aiohttp's timeouts are TimeoutError subclasses
            if isinstance(cause, aiohttp.ClientConnectorError):
                raise httpx.ConnectError(str(cause), request=request) from cause
            raise httpx.ReadError(str(cause) or type(cause).__name__, request=request) from cause


class ChannelHTTPClient(HttpxAiohttpClient):
    """`httpx.AsyncClient` for channels; close it with `aclose()` (it owns an aiohttp
    session)."""

    def __init__(self) -> None:
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS_PER_CLIENT)
        super().__init__(follow_redirects=False, limits=limits, transport=_Transport(limits=limits))
