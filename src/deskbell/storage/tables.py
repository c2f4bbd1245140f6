"""The schema. The deliveries table is both the ledger users query and the work queue workers
claim from (a transactional outbox), so nothing else has to be kept in step with it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python on every engine.

    SQLite has no time zone type; storing naive UTC there keeps its text values in the same
    order as the instants, which the claim query's `next_attempt_at <= now` relies on.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use the clock")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

requests = sa.Table(
    "requests",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),  # UUIDv7: time-ordered
    sa.Column("topic", sa.String(64), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("idempotency_key", sa.String(255), nullable=True, unique=True),
    sa.Column("body_hash", sa.String(64), nullable=True),
    # Migration 0003: the ingest's X-Request-ID and W3C traceparent, for its deliveries' logs
    # and spans (storage/queue.py `RequestTrace`).
    sa.Column("http_request_id", sa.String(128), nullable=True),
    sa.Column("traceparent", sa.String(64), nullable=True),
    # Migration 0007: the handoff (SPEC §9). `waiting` until a person claims it; who, when and
    # through what (`slack`, `email`, `api`, `ui`); `source` is the signing source that sent it
    # (its config block may name a callback_url).
    sa.Column("handoff_state", sa.String(16), nullable=False, server_default="waiting"),
    sa.Column("claimed_by", sa.String(128), nullable=True),
    sa.Column("claimed_at", UTCDateTime, nullable=True),
    sa.Column("claimed_via", sa.String(16), nullable=True),
    sa.Column("resolved_by", sa.String(128), nullable=True),
    sa.Column("resolved_at", UTCDateTime, nullable=True),
    sa.Column("source", sa.String(64), nullable=True),
    # Where the bot hears about this request (SPEC §9), fixed at accept time; NULL: nowhere.
    sa.Column("callback_url", sa.Text, nullable=True),
    # Migration 0004: the list filtered by topic walks this newest first and stops after the
    # page (it replaces an index on topic alone, whose matches had to be sorted by id).
    sa.Index("ix_requests_topic_id", "topic", "id"),
    # Migration 0007: `?handoff=waiting` newest first, and the unclaimed gauge.
    sa.Index("ix_requests_handoff_state_id", "handoff_state", "id"),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column(
        "request_id", sa.String(36), sa.ForeignKey("requests.id"), nullable=False, index=True
    ),
    sa.Column("channel", sa.String(128), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("next_attempt_at", UTCDateTime, nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_expires_at", UTCDateTime, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("sent_at", UTCDateTime, nullable=True),
    # The route's fallback channel, fixed at accept time so a later config cannot change it.
    sa.Column("fallback_channel", sa.String(128), nullable=True),
    sa.Column("fallback_of", sa.String(36), sa.ForeignKey("deliveries.id"), nullable=True),
    # Migration 0005: a replay gives a fresh retry budget, counted from here (storage/queue.py).
    sa.Column("replayed_at", UTCDateTime, nullable=True),
    sa.Column("replay_base", sa.Integer, nullable=True),  # attempts spent before the replay
    # Migration 0007: NULL for a route's notification; `escalation` (an SLA step, `step` 1..n,
    # due at `next_attempt_at`, cancelled when the request is claimed first) or `event` (a
    # callback to the bot: `event_type` such as `request.claimed`, `event_body` its data).
    sa.Column("kind", sa.String(16), nullable=True),
    sa.Column("step", sa.Integer, nullable=True),
    sa.Column("event_type", sa.String(32), nullable=True),
    sa.Column("event_body", sa.JSON, nullable=True),
    sa.Index("ix_deliveries_due", "status", "next_attempt_at"),
    # Migration 0008: one channel's waiting rows in order, for a claim whose head was crowded;
    # partial, so a delivery's moves to in flight and sent do not write it.
    sa.Index(
        "ix_deliveries_channel_due",
        "status",
        "channel",
        "next_attempt_at",
        sqlite_where=sa.text("status IN ('pending', 'retrying')"),
        postgresql_where=sa.text("status IN ('pending', 'retrying')"),
    ),
    # Migration 0004: the list filtered by status reads request ids newest first from here.
    sa.Index("ix_deliveries_status_request_id", "status", "request_id"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id", sa.String(36), sa.ForeignKey("deliveries.id"), nullable=False, index=True
    ),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("duration_ms", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("worker", sa.String(64), nullable=True),
)

# API keys (SPEC §3). Only a SHA-256 of each key is kept: the keys are 256-bit random strings,
# so a fast hash is as safe as a slow one and lets a request find its key by an index lookup.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),  # shown in listings to tell keys apart
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_used_at", UTCDateTime, nullable=True),
    sa.Column("revoked_at", UTCDateTime, nullable=True),
)

# Migration 0005: one row, updated and committed by `/readyz` to check that writes commit
# (`storage/health.py`).
heartbeat = sa.Table(
    "heartbeat",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("beat_at", UTCDateTime, nullable=True),
)


# Migration 0006: the routing config's versions (SPEC §8). `document` is the config as JSON,
# `${VAR}` references as written and literal secrets Fernet-encrypted (config/secrets.py);
# exactly one row is `active`. `summary` is what changed from the version before (JSON).
config_versions = sa.Table(
    "config_versions",
    metadata,
    sa.Column("number", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),  # SHA-256 of `document`
    sa.Column("author", sa.String(128), nullable=False),
    sa.Column("origin", sa.String(16), nullable=False),  # api, file, cli, rollback
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("active", sa.Boolean, nullable=False, default=False, index=True),
)
