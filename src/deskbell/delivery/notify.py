"""PostgreSQL LISTEN: wakes a worker pool the moment another node commits due work.

Polling stays as the fallback, so a lost listener connection only costs latency: the loop
reconnects with a capped backoff until the pool stops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog
from sqlalchemy.engine import make_url

from deskbell.aio import first_completed
from deskbell.storage.queue import NOTIFY_CHANNEL

log = structlog.get_logger(__name__)


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    return (
        make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)
    )


async def listen_for_due_work(url: str, wake: Callable[[], None], stopping: asyncio.Event) -> None:
    backoff = 0.5
    while not stopping.is_set():
        try:
            conn = await asyncpg.connect(asyncpg_dsn(url), timeout=10)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("listen_connect_failed", error=str(exc), retry_in=backoff)
        else:
            backoff = 0.5
            await _listen_until_lost(conn, wake, stopping)
            if stopping.is_set():
                return
        await first_completed(stopping.wait(), asyncio.sleep(backoff))
        backoff = min(backoff * 2, 30.0)


async def _listen_until_lost(conn: Any, wake: Callable[[], None], stopping: asyncio.Event) -> None:
    lost = asyncio.Event()

    def on_notify(*_: Any) -> None:
        wake()

    conn.add_termination_listener(lambda *_: lost.set())
    try:
        await conn.add_listener(NOTIFY_CHANNEL, on_notify)
        wake()  # anything committed while we were not listening
        await first_completed(stopping.wait(), lost.wait())
    except (OSError, asyncpg.PostgresError) as exc:
        log.warning("listen_failed", error=str(exc))
    finally:
        if not conn.is_closed():
            await conn.close(timeout=5)
