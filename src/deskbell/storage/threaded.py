"""A SQLite transaction in one hop: a thread of its own runs a whole transaction function.

The delivery queue's busiest transactions (a claim, a batch of attempt results) are plain
functions of a SQLAlchemy `Connection` (`Database.transact`). Through aiosqlite every
statement, fetch, BEGIN and COMMIT is a hop from the event loop to aiosqlite's thread and
back, each waiting for a turn of a busy loop. Here the function runs start to end in this
thread, on a sync connection with the engine's pragmas and BEGIN IMMEDIATE, while the loop
goes on sending; SQLite releases the GIL while it works and syncs.

One thread and one connection: the transactions run one after the other, as SQLite's single
writer would have them anyway. A caller that is cancelled does not stop a transaction
already handed over: it commits (or rolls back on its own error) as it would have.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa

P = ParamSpec("P")
T = TypeVar("T")


class SQLiteThread:
    """`run(fn, *args)`: `fn(conn, *args)` inside one transaction, in this object's thread."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deskbell-sqlite")

    async def run(
        self, fn: Callable[Concatenate[sa.Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transaction, fn, args, kwargs)

    def _transaction(
        self, fn: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        with self.engine.begin() as conn:
            return fn(conn, *args, **kwargs)

    async def close(self) -> None:
        """Let the transaction under way finish, then close the connection."""
        await asyncio.to_thread(self._executor.shutdown, wait=True)
        self.engine.dispose()
