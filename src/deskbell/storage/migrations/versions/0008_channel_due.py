"""deliveries: the due rows of one channel, in order

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 08:00:00.000000

A claim reads the head of the queue across channels (`ix_deliveries_due`); when channels at
their room crowd that head, it reads each other channel's earliest due rows up to its room
(`storage/claims.py`). Without this index that read walked the whole backlog, once per claim,
for a channel with nothing due. Partial (pending and retrying rows), so a delivery's moves to
in flight and sent do not write it; the claim's statuses are literals, which lets PostgreSQL
use it. Building it locks writes to `deliveries` for a few seconds
a million rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


WAITING = sa.text("status IN ('pending', 'retrying')")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_channel_due",
        "deliveries",
        ["status", "channel", "next_attempt_at"],
        sqlite_where=WAITING,
        postgresql_where=WAITING,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_channel_due", table_name="deliveries")
