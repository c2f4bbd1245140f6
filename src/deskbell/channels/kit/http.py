"""The HTTP client every channel posts through: httpx's API on aiohttp's connection pool.

Channels are written against `httpx.AsyncClient` (its requests, responses, timeouts and
errors); the connections come from aiohttp's pool, which hands out an idle connection from a
per-host queue where httpcore's rescans every pooled connection on each request (the CPU
cost is in docs/performance.md). Nothing in the channels changes, including the
`sni_hostname` extension that webhook.py uses to pin a checked address (aiohttp's
`server_hostname`).

The delivery path's POSTs go through `post()` instead: on our own client it calls aiohttp
directly, since httpx's request and response objects around aiohttp (URL parsing, header
models, the transport's stream) cost about twice aiohttp's own work per post (0.9 against
0.3 ms of CPU, docs/performance.md). Any other `httpx.AsyncClient` (a test's) is used as is.
Errors are httpx's either way, so channels classify them alike.

httpx-aiohttp reports every aiohttp connection error as `httpx.ConnectTimeout`, so a refused
connection would read "timeout" in a delivery's last error. `_Transport` gives them back
their kind: timeouts stay timeouts, a failed connect is `ConnectError`, a connection lost
mid-request is `ReadError`.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport, HttpxAiohttpClient
from httpx_aiohttp.transport import map_aiohttp_exceptions

# A pool this size serves `workers` concurrent sends (the default) without queueing; more
# sends than this wait for a connection rather than open one each.
MAX_CONNECTIONS_PER_CLIENT = 256


def _kind(exc: httpx.ConnectTimeout) -> httpx.HTTPError:
    """The error an aiohttp failure reported as ConnectTimeout really is."""
    cause = exc.__cause__
    if cause is None or isinstance(cause, asyncio.TimeoutError):
        return exc  # aiohttp's timeouts are TimeoutError subclasses
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx.ConnectError(str(cause))
    return httpx.ReadError(str(cause) or type(cause).__name__)


class _Transport(AiohttpTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.ConnectTimeout as exc:
            error = _kind(exc)
            if error is exc:
                raise
            error.request = request
            raise error from exc.__cause__


@dataclass(frozen=True, slots=True)
class Posted:
    """What a channel reads of an answer: status, headers (case-insensitive) and text."""

    status_code: int
    headers: Mapping[str, str]
    text: str


class ChannelHTTPClient(HttpxAiohttpClient):
    """`httpx.AsyncClient` for channels; close it with `aclose()` (it owns an aiohttp
    session)."""

    def __init__(self) -> None:
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS_PER_CLIENT)
        self._aiohttp = _Transport(limits=limits)
        super().__init__(follow_redirects=False, limits=limits, transport=self._aiohttp)

    def _session(self) -> aiohttp.ClientSession:
        transport = self._aiohttp
        if not isinstance(transport.client, aiohttp.ClientSession):
            transport.client = transport.get_client()
        return transport.client

    async def post_direct(
        self,
        url: str,
        content: bytes,
        headers: Mapping[str, str],
        timeouts: httpx.Timeout,
        sni: str | None = None,
    ) -> Posted:
        """One POST on aiohttp's pool, redirects not followed; raises httpx's errors."""
        client_timeout = _client_timeout(timeouts.connect, timeouts.read, timeouts.pool)
        try:
            with map_aiohttp_exceptions():
                async with self._session().request(
                    "POST",
                    url,
                    data=content,
                    headers=headers,
                    allow_redirects=False,
                    compress=False,
                    timeout=client_timeout,
                    server_hostname=sni,
                ) as response:
                    raw = await response.read()
                    charset = response.charset or "utf-8"
                    try:
                        text = raw.decode(charset, errors="replace")
                    except LookupError:
                        text = raw.decode("utf-8", errors="replace")
                    return Posted(response.status, response.headers, text)
        except httpx.ConnectTimeout as exc:
            error = _kind(exc)
            if error is exc:
                raise
            raise error from exc.__cause__


@functools.lru_cache(maxsize=64)
def _client_timeout(
    connect: float | None, read: float | None, pool: float | None
) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for httpx's, built once per channel's settings (it is immutable)."""
    return aiohttp.ClientTimeout(sock_connect=connect, sock_read=read, connect=pool)


async def post(
    http: httpx.AsyncClient,
    url: str | httpx.URL,
    *,
    content: bytes,
    headers: Mapping[str, str],
    timeouts: httpx.Timeout,
    sni: str | None = None,
) -> Posted:
    """A channel's POST: straight on aiohttp with our client, through httpx with any other."""
    if isinstance(http, ChannelHTTPClient):
        return await http.post_direct(str(url), content, headers, timeouts, sni)
    response = await http.post(
        url,
        content=content,
        headers=dict(headers),
        timeout=timeouts,
        follow_redirects=False,
        extensions={"sni_hostname": sni} if sni else None,
    )
    return Posted(response.status_code, response.headers, response.text)
