"""handoff: who took a request, SLA escalations and callbacks to the bot

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 03:30:00.000000

SPEC §9. `requests` gains its handoff state (`waiting` for every existing row: a constant
default, so neither engine rewrites the table), who claimed or resolved it and the source that
sent it. `deliveries` gains `kind` (NULL: a notification; `escalation`; `event`), the
escalation `step` and a callback event's type and body; all NULL for existing rows.
The (handoff_state, id) index serves `?handoff=waiting` and the unclaimed gauge; building it
locks writes to `requests` for about 10 s a million rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from deskbell.storage.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.add_column(
            sa.Column("handoff_state", sa.String(16), nullable=False, server_default="waiting")
        )
        batch.add_column(sa.Column("claimed_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("claimed_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("claimed_via", sa.String(16), nullable=True))
        batch.add_column(sa.Column("resolved_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("resolved_at", UTCDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("source", sa.String(64), nullable=True))
        batch.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
    op.create_index("ix_requests_handoff_state_id", "requests", ["handoff_state", "id"])
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=True))
        batch.add_column(sa.Column("step", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("event_type", sa.String(32), nullable=True))
        batch.add_column(sa.Column("event_body", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        for name in ("event_body", "event_type", "step", "kind"):
            batch.drop_column(name)
    op.drop_index("ix_requests_handoff_state_id", table_name="requests")
    with op.batch_alter_table("requests") as batch:
        for name in (
            "callback_url",
            "source",
            "resolved_at",
            "resolved_by",
            "claimed_via",
            "claimed_at",
            "claimed_by",
            "handoff_state",
        ):
            batch.drop_column(name)
