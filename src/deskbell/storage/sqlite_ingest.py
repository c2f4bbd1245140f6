"""Group commit on SQLite: one thread owns a connection and commits whatever has gathered.

Through the async engine a batch costs about eight hops between the event loop and
aiosqlite's thread (checkout, BEGIN, each statement, cursor closes, COMMIT, reset), and
under load each hop waits for a full turn of a busy event loop: commits of 32 rows took
12 ms, where SQLite itself needs under 1 ms. Here the thread takes every waiting request,
runs BEGIN IMMEDIATE, the INSERTs and COMMIT back to back, and wakes the whole batch with one
callback into the loop. While it writes (SQLite releases the GIL) the loop parses the next
requests, which form the next batch.

The thread has its own connection with the engine's pragmas (WAL, synchronous=FULL), so a
202 still follows a durable commit. Writes from elsewhere (the idempotent ingest path, the
delivery queue) use the engine's writer connection; the two take SQLite's write lock in turn
(BEGIN IMMEDIATE, busy_timeout). Driver errors are wrapped in SQLAlchemy's exception types,
so callers handle one set of errors whichever path stored the request.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from itertools import chain

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from deskbell.models import AssistanceRequestIn, Receipt
from deskbell.routing.router import Target
from deskbell.storage.engine import SQLITE_PRAGMAS
from deskbell.storage.group_commit import MAX_BATCH, IngestRows, PendingRequest
from deskbell.storage.records import NO_TRACE, RequestTrace

log = structlog.get_logger(__name__)
Waiting = tuple[PendingRequest, "asyncio.Future[None]"]
ROWS_PER_STATEMENT = 64
# A multi-row INSERT inside a transaction gets a statement journal, so that a failing row can
# undo the rest of its statement. In a file, that was an open, writes and an unlink per
# statement (strace: about 70 writes per commit); in memory, at most 64 rows' worth.
WRITER_TEMP_STORE = "PRAGMA temp_store=MEMORY"


class MultiRowInsert:
    """A table's rows as INSERTs of up to ROWS_PER_STATEMENT rows each.

    `executemany` runs the one-row statement once per row, and SQLite opens a cursor on the
    table and on each of its indexes every time: measured under callgrind, one INSERT with
    many VALUES rows took 23% fewer instructions per ingested request than executemany. The
    text for each row count is built once and the connection keeps it prepared
    (`cached_statements`), so at most ROWS_PER_STATEMENT texts per table exist; 64 rows of
    the widest table bind 576 parameters, under SQLite's oldest limit (999).
    """

    def __init__(self, one_row_sql: str) -> None:
        head, separator, values = one_row_sql.partition(" VALUES ")
        if not separator:
            raise ValueError(f"not a one-row INSERT: {one_row_sql}")
        self.one_row_sql = one_row_sql
        self._head = head + separator
        self._values = values
        self._texts: dict[int, str] = {}

    def statements(self, rows: Sequence[tuple[object, ...]]) -> Iterator[tuple[str, list[object]]]:
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            yield self._text(len(chunk)), list(chain.from_iterable(chunk))

    def _text(self, count: int) -> str:
        text = self._texts.get(count)
        if text is None:
            text = self._texts[count] = self._head + ", ".join([self._values] * count)
        return text


def sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL; None for other engines and in-memory databases,
    where a second connection would not see the same data."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    name = parsed.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return name


class SQLiteGroupCommit:
    def __init__(
        self,
        path: str,
        rows: IngestRows,
        now: Callable[[], datetime],
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.path = path
        self.rows = rows
        self._requests = MultiRowInsert(rows.requests_sql)
        self._deliveries = MultiRowInsert(rows.deliveries_sql)
        self.now = now
        self.max_batch = max_batch
        self.batches = 0  # committed transactions and the requests in them, for tests
        self.committed = 0
        # SimpleQueue, not a Condition and a list: a put is one C call with no Python-level
        # lock, and requests are put far more often than the thread takes them.
        self._queue: queue.SimpleQueue[Waiting | None] = queue.SimpleQueue()  # None: stop
        self._closing = False  # read and written on the event loop only
        self._stopping = False  # the thread's own: the stop mark has been taken
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def accept(
        self,
        payload: AssistanceRequestIn,
        targets: Sequence[Target],
        trace: RequestTrace = NO_TRACE,
    ) -> Receipt:
        """Store one request with the next batch; returns once that batch is committed."""
        if self._closing:
            raise RuntimeError("shutting down")
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._start(loop)
        pending = PendingRequest.of(payload, targets, trace)
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((pending, future))
        await future
        return pending.receipt()

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, name="deskbell-sqlite-ingest", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while (batch := self._next_batch()) is not None:
                error: Exception | None
                try:
                    conn = conn or self._connect()
                except sqlite3.Error as exc:  # this batch fails (503); the next one tries again
                    log.error("group_commit_connect_failed", error=str(exc))
                    error = DBAPIError.instance("connect", None, exc, sqlite3.Error)
                else:
                    error = self._write(conn, [item for item, _ in batch])
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._settle, batch, error)
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection:
        # Room for every INSERT text of both tables, prepared once each, and the few others.
        statements = 2 * ROWS_PER_STATEMENT + 16
        conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=statements)
        try:
            for pragma in (*SQLITE_PRAGMAS, WRITER_TEMP_STORE):
                conn.execute(pragma)
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _next_batch(self) -> list[Waiting] | None:
        """Everything waiting (up to max_batch); None once the stop mark has been reached.

        The stop mark is the last item ever put: `aclose` puts it after `accept` has begun to
        refuse, on the same event loop."""
        first = None if self._stopping else self._queue.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._stopping = True
                break
            batch.append(item)
        return batch

    def _write(self, conn: sqlite3.Connection, items: Sequence[PendingRequest]) -> Exception | None:
        """Commit the batch; the error (as SQLAlchemy's type) if nothing was stored."""
        request_rows, delivery_rows = self.rows.of(items, self.now())
        statement = "BEGIN IMMEDIATE"  # for the error: what was running
        try:
            conn.execute(statement)
            for insert, rows in ((self._requests, request_rows), (self._deliveries, delivery_rows)):
                statement = insert.one_row_sql
                for sql, parameters in insert.statements(rows):
                    conn.execute(sql, parameters)
            statement = "COMMIT"
            conn.execute(statement)
        except Exception as exc:  # the thread must go on and every waiter must be answered
            log.error("group_commit_failed", size=len(items), error=str(exc))
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error as rollback_error:
                log.error("group_commit_rollback_failed", error=str(rollback_error))
            if isinstance(exc, sqlite3.Error):
                return DBAPIError.instance(statement, None, exc, sqlite3.Error)
            return exc
        return None

    def _settle(self, batch: list[Waiting], error: Exception | None) -> None:
        """On the event loop: answer every request of a batch."""
        if error is None:
            self.batches += 1
            self.committed += len(batch)
        for _, future in batch:
            if future.done():
                continue
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

    async def aclose(self) -> None:
        """Commit what is waiting, then stop the thread."""
        if self._closing:
            return
        self._closing = True
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        # The thread took everything up to the stop mark and its last callbacks were queued
        # before the join's, so they have run: every request put has been answered.
