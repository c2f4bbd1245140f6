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

import structlog
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from deskbell.models import AssistanceRequestIn, DeliveryStatus, Receipt
from deskbell.routing.router import Target
from deskbell.storage.deadline import Deadline, abandoned
from deskbell.storage.engine import SQLITE_PRAGMAS
from deskbell.storage.group_commit import MAX_BATCH, PendingRequest, stamp_for
from deskbell.storage.records import NO_TRACE, RequestTrace

log = structlog.get_logger(__name__)
Waiting = tuple[PendingRequest, "asyncio.Future[None]"]
ROWS_PER_STATEMENT = 64
# A multi-row INSERT inside a transaction gets a statement journal, so that a failing row can
# undo the rest of its statement. In a file, that was an open, writes and an unlink per
# statement (strace: about 70 writes per commit); in memory, at most 64 rows' worth.
WRITER_TEMP_STORE = "PRAGMA temp_store=MEMORY"
_STAMP = stamp_for(sqlite_dialect.dialect())  # the text SQLite's DateTime columns hold


class MultiRowInsert:
    """A table's rows as INSERTs of up to ROWS_PER_STATEMENT rows each.

    `executemany` runs the one-row statement once per row, and SQLite opens a cursor on the
    table and on each of its indexes every time: measured under callgrind, one INSERT with
    many VALUES rows took 23% fewer instructions per ingested request than executemany. The
    text for each row count is built once and the connection keeps it prepared
    (`cached_statements`), so at most ROWS_PER_STATEMENT texts per table exist; 64 rows of
    the widest table bind 321 parameters, under SQLite's oldest limit (999).

    `row` is one row's VALUES: `{}` for each value of its own, `?1` for the batch's one value
    that every row shares (its timestamp), literals for what every new row has. Binding costs
    more than the insert of a value: the sqlite3 module copies each, and a None goes through
    its adapter lookup, which raises and catches an AttributeError per parameter. So shared
    values are bound once, and nullable ones are bound as '' and stored as NULLIF(?, '').
    """

    def __init__(self, head: str, row: str) -> None:
        self.head = head
        self.row = row
        self.width = row.count("{}")
        self._texts: dict[int, str] = {}

    def statements(
        self, shared: object, rows: Sequence[Sequence[object]]
    ) -> Iterator[tuple[str, list[object]]]:
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            parameters = [shared]
            for row in chunk:
                parameters.extend(row)
            yield self._text(len(chunk)), parameters

    def _text(self, count: int) -> str:
        text = self._texts.get(count)
        if text is None:
            width = self.width  # row r's own values are ?(2 + r*width) onwards
            rows = [
                self.row.format(*[f"?{2 + r * width + c}" for c in range(width)])
                for r in range(count)
            ]
            text = self._texts[count] = self.head + ", ".join(rows)
        return text


# The values of a new request and of its pending deliveries (storage/group_commit.py's
# REQUEST_COLUMNS and DELIVERY_COLUMNS, in the same order); ?1 is the batch's timestamp.
REQUESTS = MultiRowInsert(
    "INSERT INTO requests (id, topic, payload, created_at, http_request_id, traceparent) VALUES ",
    "({}, {}, {}, ?1, NULLIF({}, ''), NULLIF({}, ''))",
)
DELIVERIES = MultiRowInsert(
    "INSERT INTO deliveries (id, request_id, channel, status, attempts, created_at, updated_at,"
    " next_attempt_at, fallback_channel) VALUES ",
    f"({{}}, {{}}, {{}}, '{DeliveryStatus.PENDING.value}', 0, ?1, ?1, ?1, NULLIF({{}}, ''))",
)


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
        now: Callable[[], datetime],
        max_batch: int = MAX_BATCH,
        *,
        timeout: float | None = None,
    ) -> None:
        self.path = path
        self.now = now
        self.max_batch = max_batch
        self.deadline = Deadline(timeout)  # bounds each wait; the thread skips abandoned ones
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
        """Store one request with the next batch; returns once that batch is committed.
        Raises IngestTimeout past the deadline (the request may still be stored)."""
        if self._closing:
            raise RuntimeError("shutting down")
        loop = self._loop
        if loop is None or self._thread is None:
            # Once, not per request: on Python 3.11 every get_running_loop() is a getpid()
            # system call. The thread answers on this loop from now on.
            loop = asyncio.get_running_loop()
            self._start(loop)
        pending = PendingRequest.of(payload, targets, trace)
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((pending, future))
        self.deadline.watch(loop, future)
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
            while (taken := self._next_batch()) is not None:
                # Requests whose wait already ended (deadline) were answered 503: not stored.
                batch = [item for item in taken if not abandoned(item[1])]
                if not batch:
                    continue
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
        at = _STAMP(self.now())
        request_rows = [
            (
                i.id,
                i.topic,
                i.payload_json,
                i.trace.http_request_id or "",
                i.trace.traceparent or "",
            )
            for i in items
        ]
        delivery_rows = [
            (delivery_id, i.id, channel, fallback or "")
            for i in items
            for delivery_id, channel, fallback in i.deliveries
        ]
        statement = "BEGIN IMMEDIATE"  # for the error: what was running
        try:
            conn.execute(statement)
            for insert, rows in ((REQUESTS, request_rows), (DELIVERIES, delivery_rows)):
                statement = insert.head
                for sql, parameters in insert.statements(at, rows):
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
        await self.deadline.aclose()
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        # The thread took everything up to the stop mark and its last callbacks were queued
        # before the join's, so they have run: every request put has been answered.
