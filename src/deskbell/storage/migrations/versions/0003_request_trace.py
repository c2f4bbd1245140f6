"""request trace: the ingest's X-Request-ID and W3C traceparent on each request

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable, no default: adding them rewrites nothing on PostgreSQL or SQLite.
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("http_request_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("traceparent", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("traceparent")
        batch.drop_column("http_request_id")
