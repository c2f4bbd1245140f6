"""PostgreSQL LISTEN: wakes a worker pool the moment another node commits due work.

Polling stays as the fallback, so a lost listener connection only costs latency: the loop
reconnects with a capped backoff until the pool stops. Each change is one log line:
`listen_lost` when the connection goes, `listen_failed` for the first failed reconnect of a
streak (the rest are counted, `deskbell_worker_errors_total{operation="listen"}`), and
`listen_reconnected` once it listens again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from deskbell.aio import first_completed
from deskbell.delivery.streaks import FailureStreaks
from deskbell.storage.engine import NOTIFY_CHANNEL

log = structlog.get_logger(__name__)
MAX_BACKOFF = 30.0


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    return (
        make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


async def listen_for_due_work(
    url: str,
    wake: Callable[[], None],
    stopping: asyncio.Event,
    *,
    streaks: FailureStreaks | None = None,
    first_backoff: float = 0.5,
    channel: str = NOTIFY_CHANNEL,
    operation: str = "listen",
) -> None:
    """LISTEN on `channel` (default: due work) and call `wake` for each NOTIFY and after each
    (re)connect; `operation` names the log lines and the failure streak (live.py listens on
    `deskbell_config` as `config_listen`)."""
    streaks = streaks or FailureStreaks()
    backoff = first_backoff
    interrupted = False  # listened before, or failed to: the next success is a reconnect
    while not stopping.is_set():
        lost = asyncio.Event()
        try:
            conn = await _listening(url, wake, lost, channel)
        except Exception as exc:  # any failure: polling covers for it, and we try again
            streaks.failed(operation, exc, retry_in=backoff)
            interrupted = True
        else:
            backoff = first_backoff
            if interrupted:
                log.info(f"{operation}_reconnected")
            streaks.succeeded(operation)
            await _listen_until_lost(conn, wake, stopping, lost, operation)
            if stopping.is_set():
                return
            interrupted = True
        await first_completed(stopping.wait(), asyncio.sleep(backoff))
        backoff = min(backoff * 2, MAX_BACKOFF)


async def _listening(
    url: str, wake: Callable[[], None], lost: asyncio.Event, channel: str = NOTIFY_CHANNEL
) -> Any:
    """A connection LISTENing on `channel`; `lost` is set when it closes."""
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
    try:
        conn.add_termination_listener(lambda *_: lost.set())
        await conn.add_listener(channel, lambda *_: wake())
    except BaseException:
        conn.terminate()
        raise
    return conn


async def _listen_until_lost(
    conn: Any,
    wake: Callable[[], None],
    stopping: asyncio.Event,
    lost: asyncio.Event,
    operation: str = "listen",
) -> None:
    try:
        wake()  # anything committed while we were not listening
        if not conn.is_closed():
            await first_completed(stopping.wait(), lost.wait())
        if not stopping.is_set():
            log.warning(f"{operation}_lost", reason="connection closed")
    finally:
        if not conn.is_closed():
            await conn.close(timeout=5)
