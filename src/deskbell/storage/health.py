"""Write health for `/readyz`: commit one small write, within a timeout, at most once a second.

`SELECT 1` answers while every write fails: SQLite on a full disk or with its write lock held
by another process, PostgreSQL with a table locked by a migration or a stuck session. So the
probe commits a real write, an UPDATE of the one row of `heartbeat` (migration 0005), and
reports why when it cannot:

- SQLite: on a connection of its own, in a thread (the engine's one writer connection stays
  free for the work queue), `BEGIN IMMEDIATE` with a busy timeout of `timeout`, the UPDATE,
  `COMMIT` with `synchronous=FULL` as every writer here. A held write lock times out; a full
  disk fails the write or the commit.
- PostgreSQL: through the engine, with `lock_timeout` and `statement_timeout` set for the
  transaction; it first takes the lock every ingest and delivery write takes on `requests`,
  `deliveries` and `attempts` (ROW EXCLUSIVE, which writers share), so a lock that would
  stop those writes (`LOCK TABLE`, a non-concurrent index build) stops the probe too.

The result is kept for `interval` seconds and one probe runs at a time, so a load balancer
polling every node often costs one small commit a second per process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime

import sqlalchemy as sa
import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

from deskbell.clock import Clock
from deskbell.storage.engine import Database
from deskbell.storage.sqlite_ingest import sqlite_file
from deskbell.storage.tables import heartbeat

PROBE_TIMEOUT = 1.0  # seconds; a load balancer's probe often times out at 1-2 s
PROBE_INTERVAL = 1.0  # seconds a result is reused

log = structlog.get_logger(__name__)


# The tables ingest and the delivery queue write, locked as their writes lock them.
_WRITER_LOCK = "LOCK TABLE requests, deliveries, attempts IN ROW EXCLUSIVE MODE"


class WriteProbe:
    """`await check()`: None while a write commits within `timeout`, else why not."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        timeout: float = PROBE_TIMEOUT,
        interval: float = PROBE_INTERVAL,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.clock = clock
        self.timeout = timeout
        self.interval = interval
        self._monotonic = monotonic
        self._path = sqlite_file(db.url)
        self._sqlite = db.writer.dialect.name == "sqlite"
        self._lock = asyncio.Lock()
        self._checked_at: float | None = None
        self._problem: str | None = None

    async def check(self) -> str | None:
        if self._fresh():
            return self._problem
        async with self._lock:  # callers arriving meanwhile take this probe's result
            if not self._fresh():
                problem = await self._probe()
                self._checked_at = self._monotonic()
                if problem != self._problem:  # log changes, not every probe of a load balancer
                    if problem is None:
                        log.info("readiness_recovered", check="database_writes")
                    else:
                        log.warning("readiness_failed", check="database_writes", error=problem)
                self._problem = problem
        return self._problem

    def _fresh(self) -> bool:
        return self._checked_at is not None and self._monotonic() - self._checked_at < self.interval

    async def _probe(self) -> str | None:
        now = self.clock.now()
        try:
            # The outer bound is a safety net (a connection that hangs); the database's own
            # timeouts end the write first, so the connection is left clean.
            async with asyncio.timeout(self.timeout + 1.0):  # PostgreSQL's own end first
                if self._path is not None:
                    await asyncio.to_thread(_sqlite_beat, self._path, now, self.timeout)
                elif self._sqlite:
                    await self._engine_beat(now)  # an in-memory database: no second connection
                else:
                    await self._postgres_beat(now)
        except TimeoutError:
            return f"no write committed within {self.timeout + 1.0:g}s"
        except Exception as exc:
            return _reason(exc, self.timeout)
        return None

    async def _postgres_beat(self, now: datetime) -> None:
        ms = int(self.timeout * 1000)
        async with self.db.writer.begin() as conn:
            # A lock wait is the usual cause: let lock_timeout name it before the statement's.
            await conn.execute(sa.text(f"SET LOCAL lock_timeout = {ms}"))
            await conn.execute(sa.text(f"SET LOCAL statement_timeout = {ms + 250}"))
            await conn.execute(sa.text(_WRITER_LOCK))
            await _beat(conn, now)

    async def _engine_beat(self, now: datetime) -> None:
        async with self.db.writer.begin() as conn:
            await _beat(conn, now)


async def _beat(conn: AsyncConnection, now: datetime) -> None:
    done = await conn.execute(heartbeat.update().where(heartbeat.c.id == 1).values(beat_at=now))
    if done.rowcount == 0:  # the row was deleted: put it back, which is a write too
        await conn.execute(heartbeat.insert().values(id=1, beat_at=now))


def _sqlite_beat(path: str, now: datetime, timeout: float) -> None:
    """One committed UPDATE on a connection of its own (run in a thread)."""
    stamp = now.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute("UPDATE heartbeat SET beat_at = ? WHERE id = 1", (stamp,))
            if done.rowcount == 0:
                conn.execute("INSERT INTO heartbeat (id, beat_at) VALUES (1, ?)", (stamp,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


def _reason(exc: Exception, timeout: float) -> str:
    """A short, single-line cause for the 503 body and the log (no SQL, no parameters)."""
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip().splitlines()[0] if str(original).strip() else ""
    lowered = text.lower()
    if "locked" in lowered or "lock timeout" in lowered or "statement timeout" in lowered:
        return f"no write lock within {timeout:g}s ({text[:120]})"
    return f"write failed: {type(original).__name__}: {text[:160]}"
