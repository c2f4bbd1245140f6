"""The SQLite ingest writer: a thread that owns a connection and commits each batch.

Through the async engine a batch costs several hops between the event loop and aiosqlite's
thread (checkout, BEGIN, each statement, COMMIT), each waiting for a turn of a busy loop.
Here the batcher's thread (`storage/batcher.py`) runs BEGIN IMMEDIATE, the multi-row INSERTs
(`storage/rows.py`) and COMMIT back to back; while it writes (SQLite releases the GIL) the
loop parses the next requests, which form the next batch.

The connection has the engine's pragmas (WAL, synchronous=FULL), so a 202 still follows a
durable commit. Other writes (the idempotent ingest path, the delivery queue) use the
engine's writer connection; the two take SQLite's write lock in turn (BEGIN IMMEDIATE,
busy_timeout). Driver errors are wrapped in SQLAlchemy's exception types, so callers handle
one set of errors whichever path stored the request. The connection is opened with the first
batch; if it cannot be, that batch gets the error and the next one tries again.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from deskbell.storage.engine import SQLITE_PRAGMAS
from deskbell.storage.rows import ROWS_PER_STATEMENT, NewRequest, NewRows

# A multi-row INSERT inside a transaction gets a statement journal (so a failing row can undo
# the rest of its statement); in memory rather than a file opened and unlinked per statement.
WRITER_TEMP_STORE = "PRAGMA temp_store=MEMORY"


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


class SQLiteWriter:
    """`write(items)` in the batcher's thread: all of a batch is committed, or none and the
    error is raised (as SQLAlchemy's type)."""

    def __init__(self, path: str, now: Callable[[], datetime]) -> None:
        self.path = path
        self.now = now
        self.rows = NewRows(sqlite_dialect.dialect())
        self._conn: sqlite3.Connection | None = None

    def write(self, items: Sequence[NewRequest]) -> list[None]:
        statement = "connect"  # for the error: what was running
        try:
            conn = self._conn = self._conn or self._connect()
            at = self.now()
            shared = self.rows.shared(at)
            request_rows, delivery_rows = self.rows.of(items)
            extra_rows = self.rows.extra_rows(items, at)  # escalations, events: often none
            statement = "BEGIN IMMEDIATE"
            conn.execute(statement)
            try:
                for insert, rows in (
                    (self.rows.requests, request_rows),
                    (self.rows.deliveries, delivery_rows),
                    (self.rows.extras, extra_rows),
                ):
                    statement = f"INSERT INTO {insert.table.name}"
                    for sql, parameters in insert.statements(shared, rows):
                        conn.execute(sql, parameters)
                statement = "COMMIT"
                conn.execute(statement)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # the first error is the one to report
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise DBAPIError.instance(statement, None, exc, sqlite3.Error) from exc
        return [None] * len(items)

    def _connect(self) -> sqlite3.Connection:
        # Room for every INSERT text of the three, prepared once each, and the few others.
        statements = 3 * ROWS_PER_STATEMENT + 16
        conn = sqlite3.connect(self.path, isolation_level=None, cached_statements=statements)
        try:
            for pragma in (*SQLITE_PRAGMAS, WRITER_TEMP_STORE):
                conn.execute(pragma)
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
