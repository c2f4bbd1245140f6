"""The routing config's versions (SPEC §8): numbered, one active, each with who, when, from
where and what changed.

Every write takes the config lock first and then reads the active number, so two writers are
serialised and the second sees the first's version: on PostgreSQL a transaction-scoped
advisory lock (a row lock cannot do it: before the first version there is no row to lock, and
a waiter re-checking `WHERE active` after the winner's commit would find no row at all); on
SQLite the writer's BEGIN IMMEDIATE already lets one writer in at a time, across processes
too. So a write that names the version it replaces (`expected`, from `If-Match`) either sees
that version active or raises StaleVersion: two such writers never both win.

A rollback (`activate`) records a new version, a copy of the old one with origin `rollback`:
the history says who rolled back and when, and version numbers only grow, so a node polling
`active_number` sees every change. On PostgreSQL each write also sends
`pg_notify('deskbell_config', '<number>')` with its commit, for the nodes that LISTEN.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from deskbell.config.changes import summarize
from deskbell.config.document import canonical_json
from deskbell.errors import NotFound, StaleVersion
from deskbell.models import DeliveryStatus
from deskbell.storage.engine import Database
from deskbell.storage.tables import config_versions, deliveries

CONFIG_CHANNEL = "deskbell_config"  # the NOTIFY channel nodes LISTEN on
_LOCK_KEY = 0x6465736B62656C6C  # "deskbell": the advisory lock of config writes
MAX_AUTHOR = 128
_UNSETTLED = (
    DeliveryStatus.PENDING.value,
    DeliveryStatus.IN_FLIGHT.value,
    DeliveryStatus.RETRYING.value,
)


@dataclass(frozen=True, slots=True)
class ConfigVersion:
    number: int
    document: dict[str, Any]
    digest: str
    author: str
    origin: str  # api, file, cli, rollback
    created_at: datetime
    summary: dict[str, Any]
    active: bool


@dataclass(frozen=True, slots=True)
class ChannelUse:
    """Deliveries not yet settled that a channel's removal would touch: those to it, and
    those whose fallback it is."""

    deliveries: int
    fallbacks: int


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _version(row: Any) -> ConfigVersion:
    m = row._mapping
    summary = m["summary"]
    return ConfigVersion(
        number=m["number"],
        document=json.loads(m["document"]),
        digest=m["digest"],
        author=m["author"],
        origin=m["origin"],
        created_at=m["created_at"],
        summary=summary if isinstance(summary, dict) else json.loads(summary),
        active=bool(m["active"]),
    )


class ConfigVersions:
    """Queries of `config_versions` (and the delivery count a channel's removal asks for)."""

    def __init__(self, db: Database, now: Callable[[], datetime] = _utc_now) -> None:
        self.db = db
        self._now = now

    async def active_number(self) -> int | None:
        """The active version's number: one indexed read, polled every second by each node."""
        async with self.db.reader.connect() as conn:
            return await conn.scalar(
                sa.select(config_versions.c.number).where(config_versions.c.active.is_(True))
            )

    async def active(self) -> ConfigVersion | None:
        async with self.db.reader.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(config_versions).where(config_versions.c.active.is_(True))
                )
            ).first()
        return None if row is None else _version(row)

    async def get(self, number: int) -> ConfigVersion | None:
        async with self.db.reader.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(config_versions).where(config_versions.c.number == number)
                )
            ).first()
        return None if row is None else _version(row)

    async def list(self, limit: int = 100) -> list[ConfigVersion]:
        """Newest first."""
        async with self.db.reader.connect() as conn:
            rows = await conn.execute(
                sa.select(config_versions).order_by(config_versions.c.number.desc()).limit(limit)
            )
            return [_version(r) for r in rows]

    async def create(
        self,
        document: dict[str, Any],
        *,
        author: str,
        origin: str,
        summary: dict[str, Any],
        expected: int | None = None,
        unless_unchanged: bool = False,
    ) -> ConfigVersion:
        """Store `document` as the next version and make it the only active one.

        `expected`: the number the caller saw active (0: none yet); another one active raises
        StaleVersion. `unless_unchanged`: when the active version has the same digest, answer
        it and store nothing (a file adopted at start by several nodes at once)."""
        text = canonical_json(document)
        digest = hashlib.sha256(text.encode()).hexdigest()
        async with self.db.writer.begin() as conn:
            current = await self._lock_and_read_active(conn, expected)
            if unless_unchanged and current is not None and current.digest == digest:
                return current
            return await self._insert(conn, text, digest, author, origin, summary)

    async def activate(
        self, number: int, *, author: str, expected: int | None = None
    ) -> ConfigVersion:
        """Roll back to version `number`: a new version with its document, origin `rollback`,
        and a summary of what changes from the active one (`rollback_of`: `number`). When the
        active version already has that document, it is answered and nothing is stored."""
        async with self.db.writer.begin() as conn:
            current = await self._lock_and_read_active(conn, expected)
            row = (
                await conn.execute(
                    sa.select(config_versions).where(config_versions.c.number == number)
                )
            ).first()
            if row is None:
                raise NotFound(f"no config version {number}")
            target = _version(row)
            if current is not None and current.digest == target.digest:
                return current
            summary = {
                **summarize(current.document if current else None, target.document),
                "rollback_of": number,
            }
            text = canonical_json(target.document)
            return await self._insert(conn, text, target.digest, author, "rollback", summary)

    async def channel_use(self, channel: str) -> ChannelUse:
        """Deliveries not yet settled (pending, in flight, retrying) to `channel`, and those
        whose fallback is `channel`."""
        unsettled = deliveries.c.status.in_(_UNSETTLED)
        count = sa.func.count()
        async with self.db.reader.connect() as conn:
            to = await conn.scalar(
                sa.select(count).where(unsettled, deliveries.c.channel == channel)
            )
            fallback = await conn.scalar(
                sa.select(count).where(unsettled, deliveries.c.fallback_channel == channel)
            )
        return ChannelUse(int(to or 0), int(fallback or 0))

    async def _lock_and_read_active(
        self, conn: AsyncConnection, expected: int | None
    ) -> ConfigVersion | None:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
        row = (
            await conn.execute(sa.select(config_versions).where(config_versions.c.active.is_(True)))
        ).first()
        current = None if row is None else _version(row)
        if expected is not None and expected != (current.number if current else 0):
            raise StaleVersion(expected, current.number if current else None)
        return current

    async def _insert(
        self,
        conn: AsyncConnection,
        text: str,
        digest: str,
        author: str,
        origin: str,
        summary: dict[str, Any],
    ) -> ConfigVersion:
        top = await conn.scalar(sa.select(sa.func.max(config_versions.c.number)))
        number = (top or 0) + 1
        now = self._now()
        await conn.execute(
            config_versions.update().where(config_versions.c.active.is_(True)).values(active=False)
        )
        await conn.execute(
            config_versions.insert().values(
                number=number,
                document=text,
                digest=digest,
                author=author[:MAX_AUTHOR],
                origin=origin,
                created_at=now,
                summary=summary,
                active=True,
            )
        )
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.select(sa.func.pg_notify(CONFIG_CHANNEL, str(number))))
        return ConfigVersion(
            number, json.loads(text), digest, author[:MAX_AUTHOR], origin, now, summary, True
        )
