"""One asyncio helper the worker loop and the listener share."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterable
from typing import Any


async def first_completed(
    *coros: Coroutine[Any, Any, Any],
    others: Iterable[asyncio.Future[Any]] = (),
    timeout: float | None = None,  # noqa: ASYNC109 - bounds one wait, not the caller
) -> None:
    """Wait until any of `coros` or `others` finishes, or `timeout` passes.

    The coroutines are ours and are cancelled on the way out; `others` (e.g. running send
    tasks) belong to the caller and are left alone.
    """
    owned = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait([*owned, *others], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in owned:
            task.cancel()
        await asyncio.gather(*owned, return_exceptions=True)
