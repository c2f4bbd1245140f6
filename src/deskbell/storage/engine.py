"""Engines for SQLite and PostgreSQL behind one `Database`.

SQLite allows one writer at a time. Two of our own connections racing to write would make one
of them fail with "database is locked", so writes go through a single-connection engine whose
transactions start with BEGIN IMMEDIATE (waiting for other processes via busy_timeout), while
reads use a pool of their own. PostgreSQL uses one pooled engine for both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


@dataclass(frozen=True)
class Database:
    url: str
    writer: AsyncEngine
    reader: AsyncEngine

    @property
    def is_sqlite(self) -> bool:
        return self.writer.dialect.name == "sqlite"

    async def dispose(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()


SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",  # a 202 survives power loss, not just a crash
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=10000",
)


def _sqlite_pragmas(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def connect(url: str, *, engine_options: dict[str, Any] | None = None) -> Database:
    options = dict(engine_options or {})
    if make_url(url).get_backend_name() != "sqlite":
        engine = create_async_engine(url, pool_pre_ping=True, **options)
        return Database(url, engine, engine)
    writer = create_async_engine(url, pool_size=1, max_overflow=0, **options)
    reader = create_async_engine(url, pool_size=4, max_overflow=4, **options)
    _sqlite_pragmas(writer, immediate=True)
    _sqlite_pragmas(reader, immediate=False)
    return Database(url, writer, reader)
