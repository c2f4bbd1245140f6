"""Engines for SQLite and PostgreSQL behind one `Database`.

SQLite allows one writer at a time. Two of our own connections racing to write would make one
of them fail with "database is locked", so writes go through a single-connection engine whose
transactions start with BEGIN IMMEDIATE (waiting for other processes via busy_timeout), while
reads use a pool of their own. PostgreSQL uses one pooled engine for both.

URLs as people write them work: `postgresql://` and `postgres://` (what most hosts hand out)
mean asyncpg, `sqlite://` means aiosqlite; the async drivers are the only ones installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from deskbell.errors import DeskbellError
from deskbell.storage.threaded import SQLiteThread

P = ParamSpec("P")
T = TypeVar("T")

ASYNC_SCHEMES = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


class NoDatabase(DeskbellError):
    """A command that only reads or edits rows found no SQLite file (and made none)."""


class CannotOpenDatabase(DeskbellError):
    """The SQLite file is missing and its directory cannot hold one."""


@dataclass(frozen=True)
class Database:
    """`writer` and `reader`: async engines. Where `transact` runs its functions: on a SQLite
    file `thread` (`storage/threaded.py`), on PostgreSQL `queue`, an engine of their own
    without the pre-ping (three round trips before every transaction, more than a claim's
    own; a connection found dead fails that one transaction, which the worker retries, and
    the pool replaces it)."""

    url: str
    writer: AsyncEngine
    reader: AsyncEngine
    thread: SQLiteThread | None = None
    queue: AsyncEngine | None = None

    async def transact(
        self, fn: Callable[Concatenate[sa.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """`fn(conn, *args)` in one write transaction, committed if it returns: on a SQLite
        file in its thread, on PostgreSQL on `queue` with `run_sync` (no thread at all),
        on SQLite in memory on the writer engine."""
        if self.thread is not None:
            return await self.thread.run(fn, *args, **kwargs)
        async with (self.queue or self.writer).begin() as conn:
            return await conn.run_sync(fn, *args, **kwargs)

    async def dispose(self) -> None:
        if self.thread is not None:
            await self.thread.close()
        if self.queue is not None:
            await self.queue.dispose()
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


NOTIFY_CHANNEL = "deskbell_due"
_NOTIFY = sa.select(sa.func.pg_notify(NOTIFY_CHANNEL, ""))


async def notify_due(conn: AsyncConnection) -> None:
    """Wake listening workers when this transaction commits (PostgreSQL; no-op on SQLite)."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_NOTIFY)


def notify_due_in(conn: sa.Connection) -> None:
    """`notify_due` for a transaction function (`Database.transact`)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY)


SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",  # a 202 survives power loss, not just a crash
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=10000",
)


# The delivery queue's own commits (claims, attempt results: `storage/threaded.py`) need not
# survive a power loss, only a crash: losing the last of them to one puts a delivery back in
# flight under an expired lease or due again, and it is sent again (at least once). In WAL
# mode NORMAL still never corrupts the file; it skips the fsync per commit, which made the
# queue wait on the disk. Accepting a request keeps FULL: a 202 survives power loss.
QUEUE_SYNCHRONOUS = "PRAGMA synchronous=NORMAL"


def _sqlite_pragmas(engine: sa.Engine, *, immediate: bool, extra: tuple[str, ...] = ()) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in (*SQLITE_PRAGMAS, *extra):
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def async_url(url: str) -> str:
    """`url` with a plain `postgresql://`, `postgres://` or `sqlite://` scheme made async."""
    scheme, found, rest = url.partition("://")
    mapped = ASYNC_SCHEMES.get(scheme.lower()) if found else None
    return f"{mapped}://{rest}" if mapped else url


def sqlite_path(url: str) -> Path | None:
    """The file a SQLite URL names; None for other databases, memory and `uri=true` URLs."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.query.get("uri"):
        return None
    if parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _check_creatable(path: Path, shown: str, *, must_exist: bool) -> None:
    """Refuse a missing SQLite file that may not be created, or cannot be. Checked here rather
    than left to the driver: aiosqlite's failed open finishes on its thread after the event
    loop may be gone, and a CLI exiting on the error then prints that thread's traceback."""
    if must_exist:
        raise NoDatabase(
            f"no database at {shown} - run `deskbell db upgrade` to create it, or set "
            "DESKBELL_DATABASE_URL to the one `deskbell serve` uses"
        )
    directory = path.parent
    if not directory.is_dir() or not os.access(directory, os.W_OK | os.X_OK):
        problem = "does not exist" if not directory.exists() else "is not a writable directory"
        raise CannotOpenDatabase(
            f"cannot create the SQLite database {shown}: {directory} {problem} - create it, "
            "or set DESKBELL_DATABASE_URL"
        )


def connect(
    url: str, *, engine_options: dict[str, Any] | None = None, must_exist: bool = False
) -> Database:
    """Engines for `url`. `must_exist`: a SQLite file that is missing raises NoDatabase rather
    than being created empty (SQLite creates any file it is asked to open)."""
    url = async_url(url)
    options = dict(engine_options or {})
    if make_url(url).get_backend_name() != "sqlite":
        engine = create_async_engine(url, pool_pre_ping=True, **options)
        queue = create_async_engine(url, pool_size=2, max_overflow=2, **options)
        return Database(url, engine, engine, queue=queue)
    path = sqlite_path(url)
    if path is not None and not path.exists():
        _check_creatable(path, make_url(url).database or "", must_exist=must_exist)
    writer = create_async_engine(url, pool_size=1, max_overflow=0, **options)
    reader = create_async_engine(url, pool_size=4, max_overflow=4, **options)
    _sqlite_pragmas(writer.sync_engine, immediate=True)
    _sqlite_pragmas(reader.sync_engine, immediate=False)
    thread = None
    if path is not None:  # a file: a second connection sees the same data
        sync = sa.create_engine(
            make_url(url).set(drivername="sqlite"), pool_size=1, max_overflow=0, **options
        )
        _sqlite_pragmas(sync, immediate=True, extra=(QUEUE_SYNCHRONOUS,))
        thread = SQLiteThread(sync)
    return Database(url, writer, reader, thread)
