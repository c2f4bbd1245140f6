"""Bounds on what one client can make the server do: body size while reading, and a per-key
token bucket.

The body is read chunk by chunk and refused the moment it passes the limit (or at once when
Content-Length already says so), so a 100 MB upload costs at most the limit in memory, never
the upload's size. The body read here is kept on `request.state`, so signature checking (which
needs the raw bytes) and the ingest route read the stream once between them.

The rate limit is a token bucket per principal (API key, webhook source, or client address
when auth is off), in memory of each process: with N API nodes a key gets up to N times the
rate. That is a guard against a runaway or hostile client, not billing; the default is
generous.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from starlette.requests import ClientDisconnect

from deskbell.api.errors import ApiError
from deskbell.api.incoming import Incoming

MAX_BUCKETS = 10_000


async def read_body(request: Incoming, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    state = request.scope.get("state")  # what `request.state` wraps
    if state is None:
        state = request.scope["state"] = {}
    else:
        cached = state.get("raw_body")
        if isinstance(cached, bytes):
            return cached
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"body is larger than {limit} bytes")
    # The ASGI messages themselves rather than `request.stream()` (an async generator per
    # request).
    message = await request.receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnect()
    body: bytes = message.get("body", b"")
    if len(body) > limit:
        raise ApiError(413, "body_too_large", f"body is larger than {limit} bytes")
    if message.get("more_body", False):  # a small body comes in one message, as here
        body = await _rest_of_body(request, body, limit)
    state["raw_body"] = body
    return body


async def _rest_of_body(request: Incoming, first: bytes, limit: int) -> bytes:
    chunks = [first]
    size = len(first)
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets: each key may send `burst` requests at once and `rate` per second after.

    `rate` 0 turns limiting off. At most MAX_BUCKETS keys are tracked; the least recently
    seen is forgotten first (it comes back full, which only errs on the generous side).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        now: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._now = now
        self._max = max_buckets
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float | None:
        """Spend one token for `key`: None when allowed, else the seconds until one is free."""
        if self.rate <= 0:
            return None
        now = self._now()
        bucket = self._buckets.pop(key, None) or _Bucket(self.burst, now)
        self._buckets[key] = bucket
        if len(self._buckets) > self._max:
            self._buckets.popitem(last=False)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return None
        return (1 - bucket.tokens) / self.rate

    def check(self, key: str) -> None:
        """`take`, answering 429 with Retry-After (whole seconds, at least 1) when refused."""
        wait = self.take(key)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise ApiError(
                429,
                "rate_limited",
                f"too many requests; retry in {seconds} s",
                {"retry_after": seconds},
                headers={"Retry-After": str(seconds)},
            )
