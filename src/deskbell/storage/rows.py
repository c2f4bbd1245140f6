"""New rows: a request, its deliveries and fallback deliveries, and the INSERTs that store them.

The one place that knows which columns a new row fills and with what. The rows go to the
driver as tuples through INSERTs compiled from `tables.py` once per dialect and row count:
SQLAlchemy's per-row compilation and type processing cost more than the insert itself.

Values every row of a statement shares (the timestamp, `pending`, 0 attempts) are bound once
per statement (numbered parameters), and on SQLite a value that may be missing is bound as
`''` and stored through `NULLIF(?, '')`: the sqlite3 module binds a None through a slow
adapter lookup. The batch's timestamp is converted with the column type's own processor, so
the stored values are exactly what SQLAlchemy writes and reads elsewhere.

A request's SLA escalation steps (SPEC §9) and its `request.accepted` event for the bot are
delivery rows too, committed with it (so a crash after the 202 still escalates), through a
third INSERT that only requests having them pay for; every request binds two values more
(`source`, `callback_url`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from deskbell.models import (
    NO_TRACE,
    AssistanceRequestIn,
    DeliveryReceipt,
    DeliveryStatus,
    Receipt,
    RequestTrace,
)
from deskbell.routing.router import Target
from deskbell.storage.events import CALLBACK_CHANNEL
from deskbell.storage.ids import new_id
from deskbell.storage.tables import UTCDateTime, deliveries, requests

# The stored payload is the model's JSON without nulls. Its pydantic-core serializer is called
# directly: `model_dump_json` puts a dozen keyword arguments through argument parsing per call.
_SERIALIZER = AssistanceRequestIn.__pydantic_serializer__
ROWS_PER_STATEMENT = 64  # SQLite: 64 rows of the widest table bind 452 values (oldest limit 999)

# What a statement's rows share, in this order: `shared()` builds the values.
SHARED = ("at", "status", "attempts", "blank")
# Each table: the columns a row gives (in its tuple's order), and the shared value of the rest.
REQUEST_OWN = (
    "id",
    "topic",
    "payload",
    "idempotency_key",
    "body_hash",
    "http_request_id",
    "traceparent",
    "source",
    "callback_url",
)
REQUEST_SHARED = {"created_at": "at"}
DELIVERY_OWN = ("id", "request_id", "channel", "fallback_channel", "fallback_of")
DELIVERY_SHARED = {
    "status": "status",
    "attempts": "attempts",
    "created_at": "at",
    "updated_at": "at",
    "next_attempt_at": "at",
}
# Escalation steps and events: their own due time, kind and step or event. An escalation's
# `created_at` is its due time too: it becomes work then, so the backlog's "oldest pending"
# gauge does not count the wait before an SLA step as a delay, and the handoff shows when each
# step was due even after it was sent.
EXTRA_OWN = (
    "id",
    "request_id",
    "channel",
    "created_at",
    "next_attempt_at",
    "kind",
    "step",
    "event_type",
    "event_body",
)
EXTRA_SHARED = {"status": "status", "attempts": "attempts", "updated_at": "at"}
ESCALATION = "escalation"
EVENT = "event"
ACCEPTED_EVENT = "request.accepted"
Row = tuple[object, ...]


@dataclass(slots=True)
class NewRequest:
    """One request about to be stored, with the ids its 202 will carry (made on arrival).

    Never changed once made, but not `frozen`: a frozen dataclass sets each of its ten fields
    through `object.__setattr__`, and one is made per accepted request."""

    id: str
    topic: str
    payload_json: str
    deliveries: tuple[tuple[str, str, str | None], ...]  # (delivery id, channel, fallback)
    trace: RequestTrace = NO_TRACE
    idempotency_key: str | None = None
    body_hash: str | None = None
    # The signing source that sent it, and where the bot hears about it (NULL: nowhere).
    source: str | None = None
    callback_url: str | None = None
    # SLA steps: (delivery id, channel, step, after the accept), pending until then.
    escalations: tuple[tuple[str, str, int, timedelta], ...] = ()

    @classmethod
    def of(
        cls,
        payload: AssistanceRequestIn,
        targets: Sequence[Target],
        trace: RequestTrace = NO_TRACE,
        *,
        idempotency_key: str | None = None,
        body_hash: str | None = None,
        source: str | None = None,
        callback_url: str | None = None,
    ) -> NewRequest:
        steps = [t for t in targets if t.step is not None]
        if steps:
            targets = [t for t in targets if t.step is None]
        return cls(
            new_id(),
            payload.topic,
            _SERIALIZER.to_json(payload, exclude_none=True).decode(),
            tuple([(new_id(), t.channel, t.fallback) for t in targets]),
            trace,
            idempotency_key,
            body_hash,
            source,
            callback_url,
            tuple([(new_id(), t.channel, t.step or 0, t.after or timedelta()) for t in steps]),
        )

    def receipt(self) -> Receipt:
        return Receipt(
            self.id,
            self.topic,
            tuple([DeliveryReceipt(d, channel) for d, channel, _ in self.deliveries]),
        )


def accepted_data(new: NewRequest, at: datetime) -> dict[str, object]:
    """The data of a `request.accepted` event: the ids the 202 gave, never a secret."""
    return {
        "request_id": new.id,
        "topic": new.topic,
        "state": "waiting",
        "accepted_at": at.isoformat().replace("+00:00", "Z"),
        "deliveries": [{"id": d, "channel": channel} for d, channel, _ in new.deliveries],
    }


def stamp_for(dialect: Dialect) -> Callable[[datetime], object]:
    """A timestamp as the driver gets it for a UTCDateTime column: `dialect_impl` applies the
    dialect's own DateTime formatting too (SQLite's text), not only ours."""
    stamp = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    return stamp if stamp is not None else lambda value: value


class RowInsert:
    """A table's INSERT of n new rows, compiled once per n, with the getter that orders a
    statement's values (the shared ones, then each row's own) as its parameters.

    On SQLite, `statements` writes its n-row INSERTs itself, from the one-row statement
    SQLAlchemy compiled: each row's values are that row's, renumbered so that `?k` is the
    k-th value of the statement's pool (the shared values, then each row's own), which is then
    bound as it is. Compiling each n through SQLAlchemy took milliseconds, with the GIL held,
    for each batch size the writer met first."""

    def __init__(
        self,
        table: sa.Table,
        own: Sequence[str],
        shared: dict[str, str],
        dialect: Dialect,
    ) -> None:
        self.table = table
        self.own = tuple(own)
        self.shared = shared
        self.sqlite = dialect.name == "sqlite"
        # Numbered parameters, so a shared value is bound once per statement.
        self._dialect = type(dialect)(paramstyle="numeric") if self.sqlite else dialect  # type: ignore[call-arg]
        self._compiled: dict[int, tuple[str, itemgetter[object]]] = {}
        self._orders: dict[int, list[int]] = {}  # each compiled n: its getter's indexes
        self._pooled: dict[int, str] = {}  # SQLite: n-row INSERTs bound from the pool
        self._pooled_row: tuple[str, list[str | int]] | None = None  # their prefix, one row

    def compiled(self, n: int) -> tuple[str, itemgetter[object]]:
        found = self._compiled.get(n)
        if found is None:
            found = self._compiled[n] = self._compile(n)
        return found

    def _compile(self, n: int) -> tuple[str, itemgetter[object]]:
        nullable = {c.name for c in self.table.columns if c.nullable}
        blank: sa.BindParameter[object] = sa.bindparam("blank")
        values: list[dict[str, object]] = []
        for r in range(n):
            row: dict[str, object] = {
                name: sa.bindparam(bind) for name, bind in self.shared.items()
            }
            for name in self.own:
                value: sa.BindParameter[object] = sa.bindparam(f"{name}_{r}")
                row[name] = (
                    sa.func.nullif(value, blank) if self.sqlite and name in nullable else value
                )
            values.append(row)
        statement = self.table.insert().values(values if n > 1 else values[0])
        compiled = statement.compile(dialect=self._dialect)
        width = len(self.own)
        index = {name: i for i, name in enumerate(SHARED)}
        for r in range(n):
            for c, name in enumerate(self.own):
                index[f"{name}_{r}"] = len(SHARED) + r * width + c
        order = [index[name] for name in compiled.positiontup or ()]
        self._orders[n] = order
        sql = str(compiled)
        if self.sqlite:  # ?NNN: the numbered form the sqlite3 module binds from a sequence
            sql = re.sub(r":(\d+)", r"?\1", sql)
        return sql, itemgetter(*order)

    def many(self, shared: Row, rows: Sequence[Row]) -> tuple[str, list[Row]]:
        """The one-row statement and each row's parameters, for executemany."""
        sql, getter = self.compiled(1)
        return sql, [getter(shared + row) for row in rows]

    def statements(
        self, shared: Row, rows: Sequence[Row]
    ) -> Iterator[tuple[str, Sequence[object]]]:
        """Multi-row statements of up to ROWS_PER_STATEMENT rows each: executemany runs the
        one-row statement per row, and SQLite opens a cursor on the table and each of its
        indexes every time."""
        for start in range(0, len(rows), ROWS_PER_STATEMENT):
            chunk = rows[start : start + ROWS_PER_STATEMENT]
            pool: list[object] = list(shared)
            for row in chunk:
                pool.extend(row)
            if self.sqlite:
                yield self.pooled(len(chunk)), pool
            else:
                sql, getter = self.compiled(len(chunk))
                yield sql, getter(pool)

    def pooled(self, n: int) -> str:
        """SQLite: the INSERT of n rows whose `?k` is the k-th value of the pool."""
        found = self._pooled.get(n)
        if found is None:
            prefix, row = self._pooled_row or self._one_pooled_row()
            width = len(self.own)
            rows = [
                "".join(
                    piece if isinstance(piece, str) else f"?{_shifted(piece, r * width)}"
                    for piece in row
                )
                for r in range(n)
            ]
            found = self._pooled[n] = prefix + ", ".join(rows)
        return found

    def _one_pooled_row(self) -> tuple[str, list[str | int]]:
        """The one-row INSERT up to its values, and its values as text and pool numbers."""
        sql, _ = self.compiled(1)
        order = self._orders[1]
        prefix, values = sql.split(" VALUES ", 1)
        row: list[str | int] = []
        for i, piece in enumerate(re.split(r"\?(\d+)", values)):
            row.append(piece if i % 2 == 0 else order[int(piece) - 1] + 1)
        self._pooled_row = prefix + " VALUES ", row
        return self._pooled_row


def _shifted(number: int, offset: int) -> int:
    """A pool number in row r (`offset` = r times the row width): the shared values' stay."""
    return number if number <= len(SHARED) else number + offset


class NewRows:
    """The rows of new requests, deliveries and fallbacks, and their INSERTs, for one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.stamp = stamp_for(dialect)
        self.blank: str | None = "" if dialect.name == "sqlite" else None  # a missing value
        self.requests = RowInsert(requests, REQUEST_OWN, REQUEST_SHARED, dialect)
        self.deliveries = RowInsert(deliveries, DELIVERY_OWN, DELIVERY_SHARED, dialect)
        self.extras = RowInsert(deliveries, EXTRA_OWN, EXTRA_SHARED, dialect)

    def shared(self, at: datetime) -> Row:
        """The values in SHARED order: what every new row of a statement stamped `at` has."""
        return (self.stamp(at), DeliveryStatus.PENDING.value, 0, self.blank)

    def of(self, items: Sequence[NewRequest]) -> tuple[list[Row], list[Row]]:
        """(request rows, delivery rows): each row's own values, in REQUEST_OWN and
        DELIVERY_OWN order."""
        blank = self.blank
        request_rows: list[Row] = [
            (
                i.id,
                i.topic,
                i.payload_json,
                i.idempotency_key or blank,
                i.body_hash or blank,
                i.trace.http_request_id or blank,
                i.trace.traceparent or blank,
                i.source or blank,
                i.callback_url or blank,
            )
            for i in items
        ]
        delivery_rows: list[Row] = [
            (delivery_id, i.id, channel, fallback or blank, blank)
            for i in items
            for delivery_id, channel, fallback in i.deliveries
        ]
        return request_rows, delivery_rows

    def extra_rows(self, items: Sequence[NewRequest], at: datetime) -> list[Row]:
        """The escalation steps (due `after` the accept at `at`) and `request.accepted`
        events of `items`, in EXTRA_OWN order; [] for requests with neither."""
        found: list[Row] = []
        blank = self.blank
        for i in items:
            for delivery_id, channel, step, after in i.escalations:
                due = self.stamp(at + after)
                found.append((delivery_id, i.id, channel, due, due, ESCALATION, step, blank, blank))
            if i.callback_url:
                body = orjson.dumps(accepted_data(i, at)).decode()
                now = self.stamp(at)
                event = (i.id, CALLBACK_CHANNEL, now, now, EVENT, blank, ACCEPTED_EVENT, body)
                found.append((new_id(), *event))
        return found

    async def insert(
        self, conn: AsyncConnection, items: Sequence[NewRequest], at: datetime
    ) -> None:
        """Insert new requests and their pending deliveries, stamped `at`, with one
        executemany per table (and one for escalations and events, if any)."""
        shared = self.shared(at)
        request_rows, delivery_rows = self.of(items)
        await conn.exec_driver_sql(*self.requests.many(shared, request_rows))
        if delivery_rows:
            await conn.exec_driver_sql(*self.deliveries.many(shared, delivery_rows))
        extra_rows = self.extra_rows(items, at)
        if extra_rows:
            await conn.exec_driver_sql(*self.extras.many(shared, extra_rows))

    def insert_fallbacks(
        self, conn: sa.Connection, dying: Sequence[tuple[str, str, str, datetime]]
    ) -> None:
        """One pending delivery to `channel` for each (request id, channel, dead delivery
        id, time it died), linked to the dead one by `fallback_of` (in an attempt batch's
        transaction function, `storage/attempts.py`)."""
        sql, getter = self.deliveries.compiled(1)
        conn.exec_driver_sql(
            sql,
            [
                getter((*self.shared(at), new_id(), request_id, channel, self.blank, of))
                for request_id, channel, of, at in dying
            ],
        )
