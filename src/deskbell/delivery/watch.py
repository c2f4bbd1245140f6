"""SQLite: wakes a worker pool the moment another process commits, by `PRAGMA data_version`.

PostgreSQL has LISTEN/NOTIFY (`notify.py`); a `deskbell worker` on SQLite had only its poll
(`DESKBELL_POLL_SECONDS`, 1 s), so a request waited for it: p50 680 ms at 300 req/s. SQLite's
`PRAGMA data_version`, asked on a connection of our own, changes whenever any other connection
commits to the file; in WAL mode it is read from the shared-memory index, a few microseconds
and no file I/O, so asking it every `WATCH_SECONDS` (5 ms) costs about 0.5% of a core and
wakes the pool within 5 ms of an ingest's commit. Chosen over a UNIX datagram from the API
(the API would have to know every worker's address and a lost datagram still needs the
poll) and over a file watch (inotify fires on WAL writes, not commits, and is Linux only).

It asks only while the pool waits for work (`wanted`): a pool with deliveries to send claims
again as its slots free up anyway, and a commit made meanwhile still shows as a changed
version at the next check. The poll stays as the fallback: a failing watch is logged once
per streak and retried after a second.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable

from deskbell.delivery.streaks import FailureStreaks

WATCH_SECONDS = 0.005
RETRY_SECONDS = 1.0


async def watch_commits(
    path: str,
    wake: Callable[[], None],
    *,
    streaks: FailureStreaks | None = None,
    interval: float = WATCH_SECONDS,
    wanted: Callable[[], bool] = lambda: True,
) -> None:
    """Call `wake` after each commit to the SQLite file at `path` by another connection,
    until cancelled; while `wanted()` is False nothing is asked."""
    streaks = streaks or FailureStreaks()
    while True:
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                last = _version(conn)
                streaks.succeeded("watch")
                while True:
                    await asyncio.sleep(interval)
                    if not wanted():
                        continue
                    version = _version(conn)
                    if version != last:
                        last = version
                        wake()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            streaks.failed("watch", exc, retry_in=RETRY_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)


def _version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA data_version").fetchone()
    return int(row[0])
